//! A table's columns widened mid-run (schema evolution, see [`crate::schema::evolve`]).
//!
//! Guarantees: parts written before a change keep their schema. The open parts are closed
//! and recorded first, then the new columns are appended to the plan and to every stream's
//! sink, then a `schema` manifest line names the dataset, the page and each added column
//! (with its type and why), and the change is logged. A resumed run takes the plan of its
//! last recorded part and replays the pages after it, so it meets the same changes at the
//! same pages and writes the same parts and schema as an uninterrupted run.

use serde_json::json;

use crate::run::context::obj;
use crate::run::pipeline::TableRun;
use crate::schema::evolve::{Added, additions};
use crate::source::Page;
use crate::store::manifest::Manifest;

impl<'a> TableRun<'a> {
    /// Widen the plan with what page `page_no` adds (nothing when it adds nothing).
    pub(super) fn evolve(
        &mut self,
        page_no: u64,
        page: &Page,
        manifest: &mut Manifest,
    ) -> anyhow::Result<()> {
        let Some(plan) = self.plan.as_ref() else {
            return Ok(());
        };
        let cols = page.columns.as_deref().unwrap_or_default();
        let added = additions(&plan.columns, cols, &page.rows, page_no, &self.table.types);
        if added.is_empty() {
            return Ok(());
        }
        // Parts so far keep the schema they were written with.
        for si in 0..self.streams.len() {
            self.checkpoint(si, manifest)?;
        }
        crate::store::fsutil::failpoint("schema:before-change");
        let Some(plan) = self.plan.as_mut() else {
            unreachable!("checked above")
        };
        plan.columns.extend(added.iter().map(|a| a.column.clone()));
        for s in &mut self.streams {
            if let Some(sink) = s.sink.as_mut() {
                sink.widen(&plan.columns)?;
            }
        }
        let described: Vec<String> = added.iter().map(describe).collect();
        tracing::info!(
            "{}: page {page_no} widens the schema: {}",
            self.table.output,
            described.join(", ")
        );
        let ctx = self.ctx;
        manifest.append(
            "schema",
            ctx.run_id,
            obj(json!({
                "source": crate::http::display_url(&ctx.source.base),
                "table": self.table.name,
                "output": self.table.output,
                "page": page_no,
                "added": added.iter().map(|a| {
                    let mut v = json!({"name": a.column.name, "type": a.column.ty, "reason": a.column.reason});
                    if let Some(of) = &a.variant_of {
                        v["variant_of"] = json!(of);
                    }
                    v
                }).collect::<Vec<_>>(),
            })),
        )?;
        crate::store::fsutil::failpoint("schema:after-change");
        Ok(())
    }
}

fn describe(a: &Added) -> String {
    match &a.variant_of {
        Some(of) => format!(
            "{} ({:?}, for values of {of:?} its type cannot hold)",
            a.column.name, a.column.ty
        ),
        None => format!("new column {} ({:?})", a.column.name, a.column.ty),
    }
}
