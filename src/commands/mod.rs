//! One module per subcommand, each with a `run()`.

pub mod export;
pub mod harvest;
pub mod history;
pub mod incremental;
pub mod sql_extract;
pub mod verify;
