//! `harvest incremental`: the `harvest` pipeline restricted to rows at or past each table's
//! stored high-watermark (see [`crate::store::watermark`] for the store and its commit protocol).
//!
//! Guarantees: the lower bound is inclusive (`col__gte`, or a REST table's `{watermark}`
//! parameter, which must mean `>=`) so rows sharing the watermark value are never missed,
//! and rows already written inside the boundary window are skipped by identity, so none is
//! written twice; Datasette pages are requested in watermark order (`_sort`), a REST API is
//! read in its own order and rows below the bound are dropped here as well;
//! each run's rows are new Parquet parts in the same dataset; the watermark moves only after
//! the parts it covers are recorded; crash, resume and lock behave as in `harvest`.

use crate::cli::IncrementalArgs;
use crate::config::resolve_incremental;
use crate::printer::Printer;

pub fn run(args: &IncrementalArgs, printer: Printer) -> anyhow::Result<()> {
    let settings = resolve_incremental(args)?;
    if args.show_state {
        let states = crate::store::watermark::Store::new(&settings.home).all()?;
        printer.stdout(&format!("{}\n", serde_json::to_string_pretty(&states)?));
        return Ok(());
    }
    crate::run::job::runtime()?.block_on(crate::run::job::run_settings(settings, printer))
}
