//! One module per subcommand, each with a `run()`.

pub mod harvest;
pub mod incremental;
