//! `harvest completions SHELL`: a completion script for bash, zsh, fish, PowerShell or elvish,
//! generated from the same clap definitions that parse the arguments, so it offers exactly the
//! subcommands and flags this binary accepts. Printed on stdout; nothing is read or written.

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs};
use crate::printer::Printer;

pub fn run(args: &CompletionsArgs, printer: Printer) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "harvest", &mut script);
    printer.stdout(&String::from_utf8_lossy(&script));
    Ok(())
}
