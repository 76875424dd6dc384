//! `harvest config schema`: the config file's JSON Schema on stdout, generated from the types
//! the file is parsed into ([`crate::config::file::json_schema`]), so an editor that checks a
//! config against it flags the same unknown keys and wrong types `harvest` refuses.

use crate::cli::{ConfigArgs, ConfigCommand};
use crate::printer::Printer;

pub fn run(args: &ConfigArgs, printer: Printer) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Schema => {
            let schema = crate::config::file::json_schema();
            printer.stdout(&format!("{}\n", serde_json::to_string_pretty(&schema)?));
        }
    }
    Ok(())
}
