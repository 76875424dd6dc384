//! One module per subcommand, each with a `run()` that resolves its settings (arguments, config
//! file, environment), runs, and reports through the printer.
//!
//! Architecture invariant: nothing below this layer names a command. What two commands share
//! (`harvest` and `incremental` share the whole run) lives in [`crate::run`] or below.

pub mod completions;
pub mod config;
pub mod export;
pub mod harvest;
pub mod history;
pub mod incremental;
pub mod man;
pub mod plan;
pub mod sql_extract;
pub mod verify;
