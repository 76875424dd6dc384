//! `harvest harvest`: page through Datasette tables and REST APIs into raw snapshots, the
//! manifest and Parquet. This file resolves the settings (a full harvest takes every row) and
//! hands them to the run ([`crate::run::job`]), which `incremental` shares.

use crate::cli::HarvestArgs;
use crate::config::resolve_harvest;
use crate::printer::Printer;
use crate::run::job::{run_settings, runtime};

pub fn run(args: &HarvestArgs, printer: Printer) -> anyhow::Result<()> {
    let mut settings = resolve_harvest(args)?;
    // A full harvest takes every row: watermark keys in the config are for `incremental`.
    for s in &mut settings.sources {
        for t in &mut s.tables {
            t.watermark = None;
        }
    }
    runtime()?.block_on(run_settings(settings, printer))
}
