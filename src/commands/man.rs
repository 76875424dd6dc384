//! `harvest man [--out-dir DIR]`: the manual page, generated from the clap definitions (so it
//! lists exactly the flags `--help` does). Without `--out-dir`, harvest(1) in roff on stdout;
//! with it, harvest.1 plus one page per subcommand (harvest-harvest.1, harvest-verify.1, …),
//! each written whole (a temporary file renamed into place) into DIR, which is created.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::{Cli, ManArgs};
use crate::printer::Printer;
use crate::store::fsutil::atomic_write;

pub fn run(args: &ManArgs, printer: Printer) -> anyhow::Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = &args.out_dir else {
        printer.stdout(&String::from_utf8_lossy(&render(&cmd)?));
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the directory {} for the manual pages; check the --out-dir path",
            dir.display()
        )
    })?;
    let mut written = Vec::new();
    write_pages(&cmd, dir, &mut written)?;
    printer.summary(&format!(
        "wrote {} manual pages into {} (read one with `man -l {}`)",
        written.len(),
        dir.display(),
        dir.join("harvest.1").display()
    ));
    Ok(())
}

/// `cmd`'s page, then each visible subcommand's (named `harvest-<sub>.1`, as git and cargo do).
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<String>) -> anyhow::Result<()> {
    let name = format!("{}.1", cmd.get_display_name().unwrap_or(cmd.get_name()));
    let path = dir.join(&name);
    atomic_write(&path, &render(cmd)?)
        .with_context(|| format!("cannot write the manual page {}", path.display()))?;
    written.push(name);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

fn render(cmd: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .context("cannot render the manual page")?;
    Ok(ascii_roff(&String::from_utf8_lossy(&page)).into_bytes())
}

/// The help texts use a few non-ASCII characters (…, →); roff without a preconv pass reads
/// input as Latin-1 and warns on them, so each becomes the roff escape `\[uXXXX]`, which
/// groff and mandoc both render.
fn ascii_roff(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for c in page.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}
