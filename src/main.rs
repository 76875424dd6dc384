//! The `harvest` binary: parse arguments, run one subcommand, exit with its documented code.
//! All logic lives in the library (`harvest::run`); this file only maps the result to a process exit.

fn main() {
    std::process::exit(harvest::main_entry());
}
