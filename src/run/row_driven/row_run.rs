//! One row-driven table's run: responses taken in input order, recorded in batches (snapshot,
//! manifest line), their rows joined back to the input and written to the table's sink.

use anyhow::Context;
use anyhow::bail;
use serde_json::Map;
use serde_json::Value;
use serde_json::json;

use crate::run::context::obj;
use crate::run::quarantine::PageOrigin;
use crate::run::row_driven::MAX_UNPLANNED_ROWS;
use crate::run::row_driven::Response;
use crate::run::row_driven::RowRun;
use crate::schema::ColType;
use crate::source::Page;
use crate::source::TablePlan;
use crate::source::rows::INPUT_PREFIX;
use crate::source::rows::REQUEST_ID;
use crate::source::rows::STATUS;
use crate::store::fsutil::atomic_write;
use crate::store::manifest::Manifest;
use crate::store::manifest::sha256_hex;
use crate::store::parts::ClosedPart;
use crate::store::parts::TableSink;

impl RowRun<'_> {
    pub(super) fn meta_columns(&self) -> Vec<String> {
        let mut cols = vec![REQUEST_ID.to_string(), STATUS.to_string()];
        cols.extend(
            self.input_columns
                .iter()
                .map(|c| format!("{INPUT_PREFIX}{c}")),
        );
        cols
    }

    /// One response as a sparse page: the meta columns, then its records' fields.
    pub(super) fn response_page(
        &self,
        id: &str,
        status: u16,
        key: &Map<String, Value>,
        page: Page,
    ) -> anyhow::Result<Page> {
        let mut meta = vec![Value::String(id.to_string()), Value::from(status)];
        meta.extend(
            self.input_columns
                .iter()
                .map(|c| key.get(c).cloned().unwrap_or(Value::Null)),
        );
        let mut columns = self.meta_columns();
        if !(200..300).contains(&status) {
            return Ok(Page {
                columns: Some(columns),
                rows: vec![meta],
                sparse: true,
                ..Page::default()
            });
        }
        let fields = page.columns.unwrap_or_default();
        if let Some(clash) = fields.iter().find(|f| columns.contains(f)) {
            bail!(
                "table {:?}: the response field {clash:?} has the name of a column harvest adds ({REQUEST_ID}, {STATUS}, {INPUT_PREFIX}<input column>); no row of this response was written. Rename the input column in the query, or report the API field",
                self.table.output
            );
        }
        columns.extend(fields);
        let rows = page
            .rows
            .into_iter()
            .map(|r| {
                let mut row = meta.clone();
                row.extend(r);
                row
            })
            .collect();
        Ok(Page {
            columns: Some(columns),
            rows,
            sparse: true,
            ..Page::default()
        })
    }

    /// Take one response's page: plan with the first one holding records, then to the sink.
    pub(super) fn take(&mut self, batch: u64, page: Page) -> anyhow::Result<()> {
        if self.plan.is_none() {
            let has_fields = page
                .columns
                .as_ref()
                .is_some_and(|c| c.len() > 2 + self.input_columns.len())
                && !page.rows.is_empty();
            if !has_fields && self.unplanned_rows < MAX_UNPLANNED_ROWS {
                self.unplanned_rows += page.rows.len();
                self.unplanned.push((batch, page));
                return Ok(());
            }
            self.plan_pending(has_fields.then_some(&page))?;
        }
        self.push(batch, &page)
    }

    /// Plan the table from `current` (a response with records), else from the first response
    /// held back, else from the meta columns alone; then write the held-back rows.
    pub(super) fn plan_pending(&mut self, current: Option<&Page>) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.unplanned);
        self.unplanned_rows = 0;
        let meta_only;
        let first = match (current, pending.first()) {
            (Some(p), _) | (None, Some((_, p))) => p,
            (None, None) => {
                meta_only = Page {
                    columns: Some(self.meta_columns()),
                    sparse: true,
                    ..Page::default()
                };
                &meta_only
            }
        };
        self.install_plan(first)?;
        for (b, p) in &pending {
            self.push(*b, p)?;
        }
        Ok(())
    }

    pub(super) fn install_plan(&mut self, first: &Page) -> anyhow::Result<()> {
        let Some(rest) = self.table.rest.as_ref() else {
            bail!("table {:?} has no REST settings", self.table.output)
        };
        let mut p = crate::source::rest::plan_table(self.table, rest, first)?;
        for c in &mut p.columns {
            if c.name == REQUEST_ID {
                c.ty = ColType::Text;
                c.reason = "request id".into();
            } else if c.name == STATUS {
                c.ty = ColType::Integer;
                c.reason = "HTTP status".into();
            }
        }
        self.set_plan(p)
    }

    pub(super) fn set_plan(&mut self, p: TablePlan) -> anyhow::Result<()> {
        let mut sink = TableSink::new(
            &self.ctx.settings.out,
            &self.table.output,
            self.ctx.run_id,
            &p.columns,
            self.table.partition_by.as_deref(),
            self.ctx.settings.sink.clone(),
        )?;
        sink.continue_after_part(self.last_part);
        self.sink = Some(sink);
        self.plan = Some(p);
        Ok(())
    }

    pub(super) fn push(&mut self, batch: u64, page: &Page) -> anyhow::Result<()> {
        let (Some(plan), Some(sink)) = (self.plan.as_ref(), self.sink.as_mut()) else {
            unreachable!("pushed only once planned")
        };
        let rows = page.aligned(&plan.columns, &self.table.output, batch)?;
        let rows = match self.gate.as_mut() {
            None => rows,
            Some(gate) => {
                let snapshot = format!("{}/batch-{batch:06}.raw", self.raw_rel);
                let checkpoint = crate::store::unique::checkpoint_id(
                    self.ctx.run_id,
                    None,
                    self.first_since_checkpoint,
                );
                gate.keep_passing(
                    &self.table.output,
                    &mut self.quarantine,
                    &plan.columns,
                    rows,
                    &PageOrigin {
                        page: batch,
                        snapshot: &snapshot,
                        checkpoint: &checkpoint,
                        row_base: 0,
                    },
                )?
            }
        };
        sink.push_rows(&rows, batch)?;
        self.rows += rows.len() as u64;
        if let Some(too_many) = self
            .gate
            .as_ref()
            .and_then(|g| g.over_limit(&self.table.output, false))
        {
            return Err(too_many.into());
        }
        Ok(())
    }

    /// All rows of batches up to `batch` are taken: checkpoint when the sink says so.
    pub(super) fn batch_taken(
        &mut self,
        batch: u64,
        manifest: &mut Manifest,
    ) -> anyhow::Result<()> {
        self.taken = batch;
        let due = self.sink.as_ref().is_some_and(TableSink::checkpoint_due)
            || self.quarantine.checkpoint_due();
        if due && self.unplanned.is_empty() {
            self.checkpoint(manifest)?;
        }
        Ok(())
    }

    pub(super) fn checkpoint(&mut self, manifest: &mut Manifest) -> anyhow::Result<()> {
        // Rows still waiting for the plan are not in any part: no checkpoint may cover them.
        if !self.unplanned.is_empty() {
            return Ok(());
        }
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        let closed = sink.checkpoint()?;
        self.record_parts(manifest, &closed)?;
        self.first_since_checkpoint = self.taken + 1;
        Ok(())
    }

    pub(super) fn record_parts(
        &mut self,
        manifest: &mut Manifest,
        closed: &[ClosedPart],
    ) -> anyhow::Result<()> {
        let Some(plan) = self.plan.as_ref() else {
            return Ok(());
        };
        let pages = json!({
            "raw_run": self.ctx.run_id,
            "first": self.first_since_checkpoint,
            "last": self.taken,
        });
        crate::run::pipeline::record_checkpoint(
            manifest,
            self.ctx,
            self.table,
            &plan.columns,
            &pages,
            closed,
            &mut self.quarantine,
            self.gate.as_mut(),
            self.delta.as_ref(),
        )?;
        self.parts += closed.len() as u64;
        Ok(())
    }

    /// Record a batch of responses: the snapshot, then the manifest line; then their rows.
    pub(super) async fn record_batch(
        &mut self,
        batch: Vec<Response>,
        manifest: &mut Manifest,
    ) -> anyhow::Result<()> {
        let batch_no = self.batch_no + 1;
        let mut bytes = Vec::new();
        let mut entries = Vec::with_capacity(batch.len());
        let mut pages = Vec::with_capacity(batch.len());
        for r in batch {
            let f = r.f;
            let page = f
                .parsed
                .await
                .context("the response parser stopped")?
                .map_err(|why| {
                    anyhow::anyhow!(
                        "unexpected response from {}: {why}",
                        crate::http::display_url(&f.url)
                    )
                })?;
            let status = f.fetched.status;
            let id = r.id;
            let next = page.next.clone();
            let rows_page = self.response_page(&id, status, &r.key, page)?;
            let mut e = obj(json!({
                "id": id,
                "url": crate::http::display_url(&f.url),
                "status": status,
                "offset": bytes.len(),
                "bytes": f.fetched.body.len(),
                "sha256": sha256_hex(&f.fetched.body),
                "rows": rows_page.rows.len(),
                "attempts": f.fetched.attempts,
                "elapsed_ms": f.fetched.elapsed_ms,
                "fetched_at": f.fetched.fetched_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "key": r.key,
            }));
            if r.n > 1 {
                e.insert("input".into(), json!(r.input_id));
                e.insert("n".into(), json!(r.n));
            }
            if let Some(next) = &next {
                e.insert("next".into(), json!(next));
            }
            if let Some(p) = f.paging.filter(|p| p != &json!("none")) {
                e.insert("paging".into(), p);
            }
            if let Some(ct) = &f.fetched.content_type {
                e.insert("content_type".into(), json!(ct));
            }
            if let Some(enc) = &f.fetched.content_encoding {
                e.insert("content_encoding".into(), json!(enc));
                e.insert("wire_bytes".into(), json!(f.fetched.wire_bytes));
            }
            bytes.extend_from_slice(&f.fetched.body);
            *self.counts.statuses.entry(status).or_default() += 1;
            self.counts.responses += 1;
            entries.push(Value::Object(e));
            pages.push(rows_page);
        }
        let name = format!("batch-{batch_no:06}.raw");
        let rel = format!("{}/{name}", self.raw_rel);
        atomic_write(&self.raw_dir.join(&name), &bytes)
            .with_context(|| format!("cannot write the snapshot {rel}"))?;
        crate::store::fsutil::failpoint("rows:after-snapshot");
        let rows: usize = pages.iter().map(|p| p.rows.len()).sum();
        manifest.append(
            "page",
            self.ctx.run_id,
            obj(json!({
                "source": crate::http::display_url(&self.ctx.source.base),
                "table": self.table.name,
                "output": self.table.output,
                "page": batch_no,
                "path": rel,
                "sha256": sha256_hex(&bytes),
                "bytes": bytes.len(),
                "rows": rows,
                "cursor_in": null,
                "cursor_out": null,
                "row_driven": true,
                "requests": entries,
            })),
        )?;
        crate::store::fsutil::failpoint("rows:after-batch");
        self.batch_no = batch_no;
        self.fetched_batches += 1;
        for p in pages {
            self.take(batch_no, p)?;
        }
        self.batch_taken(batch_no, manifest)
    }
}
