//! One table's run, page by page: each page made durable (snapshot, then manifest line),
//! its rows taken into the stream's sink, checkpoints and the watermark tracker kept.

use anyhow::Context;
use anyhow::bail;
use serde_json::Value;
use serde_json::json;

use crate::run::context::Totals;
use crate::run::context::obj;
use crate::run::cursor::FetchedPage;
use crate::run::pipeline::TableRun;
use crate::run::pipeline::record_parts;
use crate::run::quarantine::PageOrigin;
use crate::run::resume::RecordedPage;
use crate::source::Observed;
use crate::source::Page;
use crate::source::TablePlan;
use crate::source::watermark_index;
use crate::store::fsutil::atomic_write;
use crate::store::manifest::Manifest;
use crate::store::manifest::sha256_hex;
use crate::store::parts::TableSink;

impl<'a> TableRun<'a> {
    pub(super) fn rows(&self) -> u64 {
        self.rows_before + self.streams.iter().map(|s| s.rows).sum::<u64>()
    }

    pub(super) fn known_columns(&self) -> Option<Vec<String>> {
        self.plan
            .as_ref()
            .map(|p| p.columns.iter().map(|c| c.name.clone()).collect())
    }

    /// Take one page of stream `si` whose snapshot and manifest line are durable.
    /// `to_sink: false` only feeds the watermark tracker (pages already in recorded parts).
    pub(super) fn accept(
        &mut self,
        si: usize,
        page_no: u64,
        page: &Page,
        to_sink: bool,
        manifest: &mut Manifest,
        totals: &mut Totals,
    ) -> anyhow::Result<()> {
        if self.plan.is_none() {
            // A sliced table's page counts only its slice; the plan holds the table's count.
            let count = match &self.slices {
                Some(s) => s.server_count,
                None => page.count,
            };
            let mut p = self.src.plan(page, count)?;
            if page.sparse && !self.table.schema_frozen {
                // The dataset's columns keep the types earlier runs wrote them with.
                let prior =
                    crate::run::resume::dataset_schema(self.ctx.history, &self.table.output);
                p.columns = crate::schema::evolve::continue_schema(prior, p.columns);
            }
            self.install_plan(p, totals)?;
            if self.src.typing_from_pages() {
                self.first_page = Some(page.clone());
            }
        }
        // A page whose fields vary (REST): the columns evolve, unless frozen. The common
        // page (the planned columns, every value fitting) is written as it is.
        let cols = page.columns.as_deref().unwrap_or_default();
        let evolving = page.sparse && !self.table.schema_frozen;
        let as_is = !page.sparse
            || self
                .plan
                .as_ref()
                .is_some_and(|p| crate::schema::evolve::fits_as_is(&p.columns, cols, &page.rows));
        if evolving && !as_is && to_sink {
            self.evolve(page_no, page, manifest)?;
        }
        let Some(plan) = self.plan.as_ref() else {
            unreachable!("planned above")
        };
        let aligned;
        let page_rows: &[Vec<Value>] = if as_is {
            &page.rows
        } else if evolving {
            aligned = crate::schema::evolve::place(&plan.columns, cols, &page.rows);
            &aligned
        } else {
            aligned = page.aligned(&plan.columns, &self.table.output, page_no)?;
            &aligned
        };
        if let Some(cols) = page.columns.as_ref().filter(|_| !page.sparse)
            && (cols.len() != plan.columns.len()
                || cols.iter().zip(&plan.columns).any(|(a, b)| *a != b.name))
        {
            bail!(
                "page {page_no} has columns {:?}, but the table was planned with {:?}: the table changed during the harvest; rerun with --restart",
                cols,
                plan.columns.iter().map(|c| &c.name).collect::<Vec<_>>()
            );
        }
        // Incremental: the rows past the watermark (by index).
        let keep: Option<Vec<usize>> = match self.tracker.as_mut() {
            None => None,
            Some(tracker) => {
                let col = watermark_index(self.table, plan)?;
                let mut kept = Vec::with_capacity(page_rows.len());
                for (i, r) in page_rows.iter().enumerate() {
                    if tracker.admit(r, col)? {
                        kept.push(i);
                    }
                }
                Some(kept)
            }
        };
        if !to_sink {
            return Ok(());
        }
        self.take_rows(si, page_no, page_rows, keep)?;
        let stream = &mut self.streams[si];
        stream.taken = page_no;
        let due = stream.sink.as_ref().is_some_and(TableSink::checkpoint_due)
            || stream.quarantine.checkpoint_due();
        if let Some(too_many) = self
            .gate
            .as_ref()
            .and_then(|g| g.over_limit(&self.table.output, false))
        {
            self.checkpoint_all(manifest)?;
            return Err(too_many.into());
        }
        if due {
            if self.src.typing_from_pages() {
                // A part is recorded with its final types: the scan confirms them first.
                self.confirm_due = true;
            } else {
                self.checkpoint(si, manifest)?;
            }
        }
        Ok(())
    }

    /// Take rows of page `page_no` (those in `keep`, else all) into stream `si`: with checks,
    /// those that pass go to the sink and the others to quarantine.
    fn take_rows(
        &mut self,
        si: usize,
        page_no: u64,
        page_rows: &[Vec<Value>],
        keep: Option<Vec<usize>>,
    ) -> anyhow::Result<()> {
        let Some(plan) = self.plan.as_ref() else {
            unreachable!("rows are taken only once planned")
        };
        let stream = &mut self.streams[si];
        let keep = match self.gate.as_mut() {
            None => keep,
            Some(gate) => {
                let snapshot = format!("{}/page-{page_no:06}.json", stream.raw_rel);
                let checkpoint = crate::store::unique::checkpoint_id(
                    self.ctx.run_id,
                    stream.slice,
                    stream.first_page_since_checkpoint,
                );
                let origin = PageOrigin {
                    page: page_no,
                    snapshot: &snapshot,
                    checkpoint: &checkpoint,
                    row_base: 0,
                };
                let (q, output) = (&mut stream.quarantine, &self.table.output);
                Some(match keep {
                    Some(k) => {
                        gate.judge(output, q, &plan.columns, page_rows, k.into_iter(), &origin)?
                    }
                    None => gate.judge(
                        output,
                        q,
                        &plan.columns,
                        page_rows,
                        0..page_rows.len(),
                        &origin,
                    )?,
                })
            }
        };
        let rows: std::borrow::Cow<'_, [Vec<Value>]> = match keep {
            Some(k) if k.len() < page_rows.len() => {
                std::borrow::Cow::Owned(k.into_iter().map(|i| page_rows[i].clone()).collect())
            }
            _ => std::borrow::Cow::Borrowed(page_rows),
        };
        let Some(sink) = stream.sink.as_mut() else {
            unreachable!("a plan always comes with sinks")
        };
        sink.push_rows(&rows, page_no)?;
        stream.rows += rows.len() as u64;
        Ok(())
    }

    /// Before a page's rows are taken, while typing from the pages: fold its values into the
    /// classes seen. A string or blob in a column declared numeric ends typing from the pages
    /// (the type scan decides); a real in a column planned as integer widens it to float.
    /// Either way, a changed plan encodes the open parts' pages again from their snapshots.
    pub(super) async fn type_page(&mut self, si: usize, page: &Page) -> anyhow::Result<()> {
        if !self.src.typing_from_pages() {
            return Ok(());
        }
        match self.src.observe(page) {
            Observed::Same => Ok(()),
            Observed::New => self.replan(si),
            Observed::Inexact => {
                tracing::info!(
                    "{}: a string or blob arrived in a column declared numeric: scanning the table's storage classes",
                    self.table.output
                );
                self.end_typing_from_pages(si).await
            }
        }
    }

    /// After a page's rows were taken: a checkpoint that came due while typing from the pages
    /// runs the type scan first, so that the parts it records have their final types.
    pub(super) async fn settle(
        &mut self,
        si: usize,
        manifest: &mut Manifest,
    ) -> anyhow::Result<()> {
        if !std::mem::take(&mut self.confirm_due) {
            return Ok(());
        }
        tracing::info!(
            "{}: first checkpoint: scanning the table's storage classes to confirm the column types before recording a part",
            self.table.output
        );
        self.end_typing_from_pages(si).await?;
        self.checkpoint(si, manifest)
    }

    /// Stop typing from the pages: the type scan decides, or, when the server does not answer
    /// it, the plan made so far stands (later values that contradict it stop the run, naming
    /// the override, as with declared types).
    pub(super) async fn end_typing_from_pages(&mut self, si: usize) -> anyhow::Result<()> {
        if self.src.scan_types().await? {
            self.replan(si)?;
        } else {
            tracing::info!(
                "{}: the server did not answer the type scan; keeping the types planned so far",
                self.table.output
            );
        }
        self.first_page = None;
        self.open_pages.clear();
        Ok(())
    }

    /// Plan again from what the source knows now. When a column's type changes, the open
    /// parts (never recorded) are dropped and their pages encoded again from their
    /// hash-checked snapshots.
    pub(super) fn replan(&mut self, si: usize) -> anyhow::Result<()> {
        let (Some(first), Some(plan)) = (self.first_page.as_ref(), self.plan.as_mut()) else {
            return Ok(());
        };
        let new = self.src.plan(first, plan.count)?;
        // The same first page plans the same columns; only their types can change.
        let changed: Vec<String> = plan
            .columns
            .iter()
            .zip(&new.columns)
            .filter(|(a, b)| a.ty != b.ty)
            .map(|(a, b)| format!("{} {:?} -> {:?}", a.name, a.ty, b.ty))
            .collect();
        plan.columns = new.columns;
        if changed.is_empty() {
            return Ok(());
        }
        let Some(plan) = self.plan.take() else {
            unreachable!("checked above")
        };
        let taken = self.streams[si].taken;
        let pages: Vec<RecordedPage> = self
            .open_pages
            .iter()
            .filter(|p| p.page <= taken)
            .cloned()
            .collect();
        tracing::info!(
            "{}: column types changed ({}): encoding the {} page(s) taken so far again from their snapshots",
            self.table.output,
            changed.join(", "),
            pages.len()
        );
        for s in &mut self.streams {
            s.sink = None; // its open parts were never recorded: their temp files go
            if let Some(gate) = self.gate.as_mut() {
                // Their rows are judged again: their keys and quarantined rows go too.
                let ck = crate::store::unique::checkpoint_id(
                    self.ctx.run_id,
                    s.slice,
                    s.first_page_since_checkpoint,
                );
                gate.retake(&ck, &mut s.quarantine)?;
            }
        }
        self.set_plan(plan)?;
        let known = self.known_columns();
        for rp in &pages {
            let body = rp.read_snapshot(&self.ctx.settings.out)?;
            let page = self
                .src
                .parse_snapshot(&body, known.as_deref())
                .map_err(|why| anyhow::anyhow!("the snapshot {} is unusable: {why}", rp.path))?;
            let before = self.streams[si].rows;
            self.take_rows(si, rp.page, &page.rows, None)?;
            // Rows taken again are not new rows.
            self.streams[si].rows = before;
        }
        Ok(())
    }

    pub(super) fn install_plan(&mut self, p: TablePlan, totals: &mut Totals) -> anyhow::Result<()> {
        if p.is_view && self.table.sort.is_none() {
            let w = format!(
                "{:?} is a view: Datasette pages views by offset with no guaranteed order, so rows can be skipped or repeated if the data changes during the harvest; set `sort` to a unique column",
                self.table.name
            );
            tracing::warn!("{w}");
            totals.warnings.push(w);
        }
        self.set_plan(p)
    }

    pub(super) fn set_plan(&mut self, p: TablePlan) -> anyhow::Result<()> {
        // Open parts of all streams share the memory budget.
        let n = self.streams.len().max(1);
        let mut settings = self.ctx.settings.sink.clone();
        settings.memory_budget /= n;
        settings.max_open_parts = (settings.max_open_parts / n).max(1);
        for s in &mut self.streams {
            let tag = match s.slice {
                None => self.ctx.run_id.to_string(),
                Some(k) => format!("{}-s{k}", self.ctx.run_id),
            };
            let mut sink = TableSink::new(
                &self.ctx.settings.out,
                &self.table.output,
                &tag,
                &p.columns,
                self.table.partition_by.as_deref(),
                settings.clone(),
            )?;
            sink.continue_after_part(s.last_part);
            s.sink = Some(sink);
        }
        self.plan = Some(p);
        Ok(())
    }

    /// Close and record stream `si`'s open parts: all rows of its pages so far are durable.
    pub(super) fn checkpoint(&mut self, si: usize, manifest: &mut Manifest) -> anyhow::Result<()> {
        let (Some(plan), stream) = (self.plan.as_ref(), &mut self.streams[si]) else {
            return Ok(());
        };
        let Some(sink) = stream.sink.as_mut() else {
            return Ok(());
        };
        let closed = sink.checkpoint()?;
        record_parts(
            manifest,
            self.ctx,
            self.table,
            plan,
            stream,
            &closed,
            self.gate.as_mut(),
            self.delta.as_ref(),
        )?;
        stream.parts += closed.len() as u64;
        stream.first_page_since_checkpoint = stream.taken + 1;
        Ok(())
    }

    pub(super) fn checkpoint_all(&mut self, manifest: &mut Manifest) -> anyhow::Result<()> {
        if self.src.typing_from_pages() {
            // The types are not final, so no part is recorded: the open parts' temp files go,
            // and a resumed run replays their pages from the recorded snapshots.
            for s in &mut self.streams {
                s.sink = None;
                s.quarantine.abandon();
            }
            tracing::info!(
                "{}: stopped while the column types still came from the pages: no part recorded; a resumed run replays the recorded pages from their snapshots",
                self.table.output
            );
            return Ok(());
        }
        for si in 0..self.streams.len() {
            self.checkpoint(si, manifest)?;
        }
        Ok(())
    }

    /// Make a fetched page durable: its snapshot, then its manifest line. Its rows are taken
    /// next, by [`Self::accept`].
    pub(super) async fn record_page(
        &mut self,
        f: FetchedPage,
        manifest: &mut Manifest,
    ) -> anyhow::Result<(usize, u64, Page)> {
        let ctx = self.ctx;
        let source = ctx.source;
        let FetchedPage {
            stream: si,
            page_no,
            url,
            cursor_in,
            fetched,
            paging,
            sent,
            parsed,
            ..
        } = f;
        // A page whose rows do not parse is refused before anything records it.
        let page = parsed
            .await
            .context("the page parser stopped")?
            .map_err(|why| {
                anyhow::anyhow!(
                    "unexpected response from {}: {why}",
                    crate::http::display_url(&url)
                )
            })?;
        let s = &mut self.streams[si];
        debug_assert_eq!(page_no, s.page_no + 1, "walkers deliver pages in order");
        let snap_name = format!("page-{page_no:06}.json");
        let snap_rel = format!("{}/{snap_name}", s.raw_rel);
        atomic_write(&s.raw_dir.join(&snap_name), &fetched.body)
            .with_context(|| format!("cannot write the snapshot {snap_rel}"))?;
        let sha256 = sha256_hex(&fetched.body);
        if self.src.typing_from_pages() {
            self.open_pages.push(RecordedPage {
                page: page_no,
                path: snap_rel.clone(),
                sha256: sha256.clone(),
                cursor_out: page.next.clone(),
            });
        }
        let s = &mut self.streams[si];
        let mut rec = obj(json!({
            "source": crate::http::display_url(&source.base),
            "table": self.table.name,
            "output": self.table.output,
            "page": page_no,
            "url": crate::http::display_url(&url),
            "params": crate::http::query_params(&url),
            "status": fetched.status,
            "sha256": sha256,
            "bytes": fetched.body.len(),
            "path": snap_rel,
            "rows": page.rows.len(),
            "cursor_in": cursor_in,
            "cursor_out": page.next,
            "fetched_at": fetched.fetched_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "attempts": fetched.attempts,
            "elapsed_ms": fetched.elapsed_ms,
        }));
        if !source.database.is_empty() {
            rec.insert("database".into(), json!(source.database));
        }
        if let Some(p) = paging {
            rec.insert("paging".into(), p);
        }
        if let Some(sent) = sent {
            rec.insert("method".into(), json!(sent.method));
            if let Some(h) = sent.body_sha256 {
                rec.insert("request_body_sha256".into(), json!(h));
            }
        }
        if let Some(k) = s.slice {
            rec.insert("slice".into(), json!(k));
        }
        if fetched.content_encoding.is_some() {
            rec.insert("wire_bytes".into(), json!(fetched.wire_bytes));
        }
        for (k, v) in [
            ("etag", &fetched.etag),
            ("last_modified", &fetched.last_modified),
            ("content_type", &fetched.content_type),
            ("content_encoding", &fetched.content_encoding),
            ("http_version", &fetched.http_version),
        ] {
            if let Some(v) = v {
                rec.insert(k.into(), json!(v));
            }
        }
        // Page 1 records the row count to reconcile with (so a resumed run has it too).
        if page_no == 1
            && s.slice.is_none()
            && let Some(c) = page.count.or_else(|| self.src.table_count())
        {
            rec.insert("server_count".into(), json!(c));
            self.server_count = Some(c);
        }
        manifest.append("page", ctx.run_id, rec)?;
        s.page_no = page_no;
        s.cursor.clone_from(&page.next);
        s.fetched += 1;
        Ok((si, page_no, page))
    }

    /// Replay a page an earlier process recorded: its rows, from its hash-checked snapshot.
    pub(super) async fn replay(
        &mut self,
        si: usize,
        rp: &RecordedPage,
        to_sink: bool,
        manifest: &mut Manifest,
        totals: &mut Totals,
    ) -> anyhow::Result<Page> {
        let body = rp.read_snapshot(&self.ctx.settings.out)?;
        let known = self.known_columns();
        let page = self
            .src
            .parse_snapshot(&body, known.as_deref())
            .map_err(|why| {
                anyhow::anyhow!("the recorded snapshot {} is unusable: {why}", rp.path)
            })?;
        let before = self.streams[si].rows;
        if to_sink {
            if self.src.typing_from_pages() {
                self.open_pages.push(rp.clone());
            }
            self.type_page(si, &page).await?;
        }
        self.accept(si, rp.page, &page, to_sink, manifest, totals)?;
        self.settle(si, manifest).await?;
        let s = &mut self.streams[si];
        s.rows_replayed += s.rows - before;
        Ok(page)
    }
}
