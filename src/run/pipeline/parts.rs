//! What a table's Parquet parts need around them: their manifest lines, Delta commits,
//! superseding a dataset's older parts, and removing parts an unfinished run left.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;
use serde_json::json;

use crate::run::context::RunCtx;
use crate::run::context::obj;
use crate::run::pipeline::Stream;
use crate::run::quarantine::{Gate, Quarantine};
use crate::source::TablePlan;
use crate::source::datasette::slices::SlicePlan;
use crate::source::settings::TableSettings;
use crate::store::fsutil::files_under;
use crate::store::fsutil::is_part_file;
use crate::store::fsutil::rel_path;
use crate::store::manifest::Manifest;
use crate::store::parts::ClosedPart;

/// In a DIR shared by writers: what this writer knows of the table's Delta files, and whether
/// the table is split between writers (`--shard`).
pub(crate) fn shared_table(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    manifest: &Manifest,
) -> Option<crate::store::delta::Shared> {
    ctx.settings.writer.as_ref()?;
    Some(crate::store::delta::Shared {
        known: manifest
            .follower(|l: &crate::store::delta::Ledger| {
                l.outputs.get(&table.output).map(|d| d.known.clone())
            })
            .flatten(),
        split: table.shard.is_some(),
    })
}

/// What a shard records about its share of a split table: `index`/`count` as in
/// `--shard I/N`, and the slices it pages.
pub(super) fn shard_json(share: crate::source::settings::SliceShare, plan: &SlicePlan) -> Value {
    let mine: Vec<u32> = plan
        .slices
        .iter()
        .map(|s| s.index)
        .filter(|k| share.owns(*k))
        .collect();
    json!({ "index": share.index, "count": share.count, "slices": mine })
}

/// Record a checkpoint of one stream (see [`record_checkpoint`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn record_parts(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    plan: &TablePlan,
    stream: &mut Stream,
    closed: &[ClosedPart],
    gate: Option<&mut Gate>,
    delta: Option<&crate::store::delta::Target>,
) -> anyhow::Result<()> {
    let mut pages = json!({
        "raw_run": ctx.run_id,
        "first": stream.first_page_since_checkpoint,
        "last": stream.taken,
    });
    if let Some(k) = stream.slice {
        pages["slice"] = json!(k);
    }
    record_checkpoint(
        manifest,
        ctx,
        table,
        &plan.columns,
        &pages,
        closed,
        &mut stream.quarantine,
        gate,
        delta,
    )
}

/// Record one checkpoint: its quarantine part closed, the `unique` keys its rows hold made
/// durable, its lines written (the dataset's parts, then the quarantine's), then the keys
/// settled. The key index names the checkpoint by `pages` (run, slice, first page), as the
/// resume reads it back from the lines.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_checkpoint(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    columns: &[crate::schema::ColumnPlan],
    pages: &Value,
    closed: &[ClosedPart],
    quarantine: &mut Quarantine,
    mut gate: Option<&mut Gate>,
    delta: Option<&crate::store::delta::Target>,
) -> anyhow::Result<()> {
    let quarantined = quarantine.close()?;
    let checkpoint = crate::store::unique::checkpoint_id(
        ctx.run_id,
        pages["slice"].as_u64().and_then(|k| u32::try_from(k).ok()),
        pages["first"].as_u64().unwrap_or(0),
    );
    if let Some(g) = gate.as_deref_mut() {
        g.before_lines()?;
    }
    record_part_lines(
        manifest,
        ctx,
        table,
        columns,
        pages,
        closed,
        (&quarantined, &quarantine.since),
        delta,
    )?;
    quarantine.since = Default::default();
    if let Some(g) = gate {
        g.after_lines(&checkpoint)?;
    }
    Ok(())
}

/// One `parquet` manifest line per closed part: the pages (or batches) whose rows it holds,
/// the table's schema, and its partition; then one `quarantine` line per quarantine part of
/// the same checkpoint (`of` counts both). A Delta table written by appends then commits the
/// dataset's parts.
#[allow(clippy::too_many_arguments)]
fn record_part_lines(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    columns: &[crate::schema::ColumnPlan],
    pages: &Value,
    closed: &[ClosedPart],
    (quarantined, counts): (&[ClosedPart], &crate::run::quarantine::CheckCounts),
    delta: Option<&crate::store::delta::Target>,
) -> anyhow::Result<()> {
    let of = closed.len() + quarantined.len();
    for part in closed {
        let mut rec = obj(json!({
            "path": part.rel_path,
            "sha256": part.sha256,
            "bytes": part.bytes,
            "rows": part.rows,
            "source": crate::http::display_url(&ctx.source.base),
            "table": table.name,
            "output": table.output,
            "pages": pages,
            "schema": columns,
            // How many parts this checkpoint closed: resume knows a checkpoint whose lines
            // a crash cut short.
            "of": of,
        }));
        if let (Some(col), Some(v)) = (&table.partition_by, &part.partition) {
            rec.insert("partition".into(), json!({ col: v }));
        }
        if let Some(t) = delta {
            rec.insert("delta".into(), json!(t.mode.as_str()));
        }
        manifest.append("parquet", ctx.run_id, rec)?;
        crate::store::fsutil::failpoint("parts:between-lines");
    }
    crate::run::quarantine::record_quarantine_lines(
        manifest,
        ctx.run_id,
        (
            &crate::http::display_url(&ctx.source.base),
            &table.name,
            &table.output,
        ),
        pages,
        quarantined,
        counts,
        columns,
        of,
    )?;
    if let Some(t) = delta.filter(|t| t.mode == crate::store::delta::Mode::Append)
        && !closed.is_empty()
    {
        commit_delta(manifest, ctx, &table.output, t, pages)?;
    } else if let Some(r) = &ctx.settings.remote {
        // Object storage: the checkpoint's files, then its manifest lines.
        r.publish()?;
    }
    Ok(())
}

/// Commit to the table's Delta log what the manifest now says it holds (nothing when they
/// agree), and record the commit.
pub(crate) fn commit_delta(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    output: &str,
    target: &crate::store::delta::Target,
    pages: &Value,
) -> anyhow::Result<()> {
    let wanted =
        manifest.follower(|l: &crate::store::delta::Ledger| l.outputs.contains_key(output));
    if wanted != Some(true) {
        return Ok(());
    }
    // Object storage: the parts go up before the commit that names them.
    if let Some(r) = &ctx.settings.remote {
        r.publish()?;
    }
    crate::store::fsutil::failpoint("delta:before-commit");
    let mut info = serde_json::Map::new();
    info.insert("harvest.run_id".into(), json!(ctx.run_id));
    info.insert("harvest.command".into(), json!(ctx.settings.command));
    info.insert("harvest.pages".into(), pages.clone());
    // What the ledger wants is read in place (no copy of the dataset's part list per
    // checkpoint); the commit appends nothing to the manifest, which is appended to after.
    let done = manifest
        .follower(|l: &crate::store::delta::Ledger| {
            l.outputs.get(output).map(|desired| {
                crate::store::delta::sync(
                    &ctx.settings.out,
                    &target.table_rel,
                    output,
                    desired,
                    info,
                )
            })
        })
        .flatten()
        .transpose()?
        .flatten();
    crate::store::fsutil::failpoint("delta:after-commit");
    if let Some(c) = done {
        tracing::info!(
            table = %output,
            version = c.version,
            "{output}: Delta version {} ({} file(s) added, {} removed)",
            c.version,
            c.added,
            c.removed
        );
        manifest.append(
            "delta_commit",
            ctx.run_id,
            obj(json!({
                "output": output,
                "table": target.table_rel,
                "delta_version": c.version,
                "mode": target.mode.as_str(),
                "added": c.added,
                "removed": c.removed,
            })),
        )?;
    }
    Ok(())
}

/// The end of a table written to a Delta log. An overwriting run records the files it
/// replaces as superseded (kept on disk: older versions still read them), then commits their
/// removal and its own parts together; an appending run has committed at its checkpoints. A
/// complete (not incremental) appending run also retires the parts earlier runs recorded that
/// the log does not hold (their dataset directory was removed by hand): this run replaces them.
pub(crate) fn finish_delta(
    manifest: &mut Manifest,
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    target: &crate::store::delta::Target,
    complete: bool,
) -> anyhow::Result<()> {
    let desired = manifest
        .follower(|l: &crate::store::delta::Ledger| l.outputs.get(&table.output).cloned())
        .flatten();
    let desired = desired.as_ref();
    let (stale, kept, reason): (Vec<String>, bool, &str) = match (target.mode, desired) {
        (crate::store::delta::Mode::Overwrite, Some(d)) => {
            let state = crate::store::delta::load(&ctx.settings.out, &target.table_rel)?;
            let stale = state
                .files
                .keys()
                .filter(|p| d.known.contains(*p) && !d.files.contains_key(*p))
                .cloned()
                .collect();
            (
                stale,
                true,
                "a newer complete harvest of the table replaces these parts in a Delta commit; the files stay for time travel",
            )
        }
        (crate::store::delta::Mode::Append, Some(d)) if complete => (
            d.files
                .iter()
                .filter(|(_, w)| w.run_id != ctx.run_id)
                .map(|(p, _)| p.clone())
                .collect(),
            false,
            "parts of earlier runs that are no longer on disk nor in the Delta table; this complete harvest replaces them",
        ),
        _ => (vec![], false, ""),
    };
    if !stale.is_empty() {
        let mut rec = obj(json!({
            "output": table.output,
            "reason": reason,
            "paths": stale,
        }));
        if kept {
            rec.insert("kept".into(), json!(true));
        }
        manifest.append("supersede", ctx.run_id, rec)?;
    }
    commit_delta(
        manifest,
        ctx,
        &table.output,
        target,
        &json!({ "raw_run": ctx.run_id, "table_end": true }),
    )
}

/// After a complete harvest of a table, the parts earlier runs wrote for the same dataset are
/// stale: record their removal, then remove them, so readers see exactly one copy of each row.
pub(crate) fn supersede_parts(
    out: &Path,
    table_rel: &str,
    run_id: &str,
    output: &str,
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    let mine = format!("part-{run_id}-");
    let mut stale: Vec<PathBuf> = files_under(&out.join(table_rel))?
        .into_iter()
        .filter(|p| {
            is_part_file(p)
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&mine))
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    stale.sort();
    let rels: Vec<String> = stale.iter().map(|p| rel_path(out, p)).collect();
    manifest.append(
        "supersede",
        run_id,
        obj(json!({ "output": output, "reason": "a newer complete harvest of the table replaces these parts", "paths": rels })),
    )?;
    for p in &stale {
        std::fs::remove_file(p)
            .with_context(|| format!("cannot remove the superseded part {}", p.display()))?;
        if let Some(dir) = p.parent() {
            let _ = crate::store::fsutil::fsync_dir(dir);
            // Drop partition directories that are now empty.
            if dir != out.join(table_rel)
                && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
            {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    tracing::info!(
        "{output}: replaced {} part(s) from earlier runs",
        stale.len()
    );
    Ok(())
}

pub(super) fn dataset_has_parts(dir: &Path) -> bool {
    files_under(dir).is_ok_and(|files| files.iter().any(|p| is_part_file(p)))
}

/// Incremental datasets accumulate parts, so parts recorded by an earlier run that never
/// finished this table (and is not being resumed) would duplicate rows: record, then remove.
pub(crate) fn remove_unfinished_parts(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    manifest: &mut Manifest,
    delta: Option<&crate::store::delta::Target>,
) -> anyhow::Result<()> {
    let paths = crate::run::resume::unfinished_parts(ctx.history, &table.output, ctx.run_id);
    remove_recorded_parts(
        ctx,
        table,
        paths,
        "parts of an unfinished earlier run that is not being resumed",
        manifest,
        delta,
    )
}

/// The recorded parts of a checkpoint a crash cut short (see
/// [`crate::run::resume::TableProgress::incomplete_parts`]): the resumed run replays their
/// pages, so they go first (record, then remove), or their rows would be there twice.
pub(crate) fn remove_incomplete_checkpoint(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    paths: &[String],
    manifest: &mut Manifest,
    delta: Option<&crate::store::delta::Target>,
) -> anyhow::Result<()> {
    remove_recorded_parts(
        ctx,
        table,
        paths.to_vec(),
        "parts of a checkpoint whose records a crash cut short; their pages are replayed",
        manifest,
        delta,
    )
}

/// Record the removal of `paths` (those still on disk), then remove them; on a Delta table
/// a commit removes them and the files stay for older versions.
fn remove_recorded_parts(
    ctx: &RunCtx<'_>,
    table: &TableSettings,
    paths: Vec<String>,
    reason: &str,
    manifest: &mut Manifest,
    delta: Option<&crate::store::delta::Target>,
) -> anyhow::Result<()> {
    let paths: Vec<String> = paths
        .into_iter()
        .filter(|p| ctx.settings.out.join(p).exists())
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    let mut rec = obj(json!({ "output": table.output, "reason": reason, "paths": paths }));
    if let Some(t) = delta {
        // Committed parts: a Delta commit removes them; the files stay for older versions.
        rec.insert("kept".into(), json!(true));
        manifest.append("supersede", ctx.run_id, rec)?;
        tracing::warn!(
            "{}: removing {} part(s) from the Delta table: {reason}",
            table.output,
            paths.len()
        );
        return commit_delta(
            manifest,
            ctx,
            &table.output,
            t,
            &json!({ "raw_run": ctx.run_id, "removed_unfinished": true }),
        );
    }
    manifest.append("supersede", ctx.run_id, rec)?;
    for p in &paths {
        let full = ctx.settings.out.join(p);
        std::fs::remove_file(&full).with_context(|| format!("cannot remove {}", full.display()))?;
    }
    tracing::warn!(
        "{}: removed {} part(s): {reason}",
        table.output,
        paths.len()
    );
    Ok(())
}
