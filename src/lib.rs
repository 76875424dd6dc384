//! `harvest`: move data out of HTTP APIs and SQLite into Parquet, with proof of where every
//! byte came from. The binary calls [`main_entry`], which parses the arguments, dispatches one
//! line per subcommand to `commands/<name>.rs`, and maps the result to an exit code.
//!
//! The modules are layered, top first: `commands` → `cli`, `config` → `run` → `source` →
//! `store` → `error`, `printer`, `progress` → `http`, `schema`, `redact`. A module names only its
//! own layer or those below (`src/LAYERS`, checked by `scripts/test`; docs/development.md).

pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod http;
pub mod printer;
pub mod progress;
pub mod redact;
pub mod run;
pub mod schema;
pub mod source;
pub mod store;

/// The manifest's hashing, by its old path (the integration tests check chains with it).
pub use self::store::manifest;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::error::{Exit, exit_code_for};
use crate::printer::Printer;

/// Parse arguments, run the subcommand, print any error, and return the exit code.
pub fn main_entry() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage as i32
            } else {
                Exit::Success as i32
            };
            let _ = e.print();
            return code;
        }
    };
    let printer = Printer::init(cli.log_format, cli.quiet, cli.verbose);
    let result = match &cli.command {
        Command::Harvest(args) => commands::harvest::run(args, printer),
        Command::Incremental(args) => commands::incremental::run(args, printer),
        Command::SqlExtract(args) => commands::sql_extract::run(args, printer),
        Command::Verify(args) => commands::verify::run(args, printer),
        Command::History(args) => commands::history::run(args, printer),
        Command::Export(args) => commands::export::run(args, printer),
        Command::Plan(args) => commands::plan::run(args, printer),
        Command::Config(args) => commands::config::run(args, printer),
        Command::Completions(args) => commands::completions::run(args, printer),
        Command::Man(args) => commands::man::run(args, printer),
    };
    match result {
        Ok(()) => Exit::Success as i32,
        Err(err) => {
            printer.error(&err);
            exit_code_for(&err) as i32
        }
    }
}
