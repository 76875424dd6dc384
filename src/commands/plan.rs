//! `harvest plan -c CONFIG [--table T…] [--json]`: what `harvest -c CONFIG` would do, table by
//! table, without writing anything ([`crate::run::plan`] says what is asked of the servers).
//!
//! Guarantees: the settings are resolved exactly as `harvest` resolves them (a config error
//! is the same exit 2); the plan is printed on stdout (a table per table, or one JSON
//! document with `--json`), credentials masked; the exit code is 0 when no table has a
//! problem, 2 when one has a problem of the config's, and a failure's own code otherwise
//! (4 credentials refused, 5 the server did not answer, 1 anything else).

use std::fmt::Write as _;

use serde_json::json;

use crate::cli::{HarvestArgs, PlanArgs};
use crate::config::{load_config, resolve_harvest};
use crate::error::UsageError;
use crate::printer::Printer;
use crate::run::job::runtime;
use crate::run::plan::{Plan, TableReport};

/// The JSON document's format version.
pub const PLAN_VERSION: u64 = 1;

pub fn run(args: &PlanArgs, printer: Printer) -> anyhow::Result<()> {
    // The run needs `out`; the plan does not, so a config without one is planned as well.
    let has_out = args.out.is_some() || load_config(&args.config)?.out.is_some();
    let harvest_args = HarvestArgs {
        config: Some(args.config.clone()),
        out: args
            .out
            .clone()
            .or_else(|| (!has_out).then(|| std::path::PathBuf::from("."))),
        ..HarvestArgs::default()
    };
    let settings = resolve_harvest(&harvest_args)?;
    let mut plan = runtime()?.block_on(crate::run::plan::plan(&settings, &args.tables))?;
    if !has_out {
        plan.out = "(not set: the run needs --out DIR)".into();
    }
    if args.json {
        let doc = json!({ "version": PLAN_VERSION, "plan": &plan });
        printer.stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    } else {
        printer.stdout(&human(&plan));
    }
    let with_problems = plan
        .tables
        .iter()
        .filter(|t| !t.problems.is_empty())
        .count();
    printer.summary(&format!(
        "planned {} table(s): {}",
        plan.tables.len(),
        match plan.problems {
            0 => "no problem found".to_string(),
            n => format!("{n} problem(s) in {with_problems} table(s)"),
        }
    ));
    if let Some(failure) = plan.tables.iter_mut().find_map(|t| t.failure.take()) {
        return Err(failure);
    }
    if plan.problems > 0 {
        return Err(UsageError::with_hint(
            format!(
                "the plan found {} problem(s) in {with_problems} table(s)",
                plan.problems
            ),
            "fix what each table's `problem` line names, then run `harvest plan` again",
        )
        .into());
    }
    Ok(())
}

/// The plan as aligned text: a block per table.
fn human(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "output: {}", plan.out);
    for t in &plan.tables {
        s.push('\n');
        table(&mut s, t);
    }
    s
}

fn table(s: &mut String, t: &TableReport) {
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(s, "  {key:<11} {value}");
    };
    line(
        "table",
        &format!(
            "{} ({} source {:?}) → dataset {}",
            t.table, t.kind, t.source, t.output
        ),
    );
    if let Some(input) = &t.input {
        line("input", &input.from);
        line("  columns", &input.columns.join(", "));
        if let Some(row) = &input.first_row {
            line(
                "  first row",
                &serde_json::to_string(row).unwrap_or_default(),
            );
        }
    }
    if let Some(f) = &t.files {
        line(
            "files",
            &format!("{} ({} file(s) now)", f.glob, f.matched.len()),
        );
        for m in &f.matched {
            line("", m);
        }
    }
    if let Some(r) = &t.request {
        line("request", &format!("{} {}", r.method, r.url));
        for [k, v] in &r.headers {
            line("  header", &format!("{k}: {v}"));
        }
        if let Some(b) = &r.body {
            line("  body", &b.to_string());
        }
    }
    if let Some(p) = &t.paginator {
        line("paginator", &p.to_string());
    }
    if let Some(rule) = &t.paginator_rule {
        line("  auto", rule);
    }
    if let Some(r) = &t.records {
        line("records", if r.is_empty() { "the body itself" } else { r });
    }
    if let Some(p) = &t.first_page {
        line(
            "page 1",
            &format!(
                "HTTP {}, {} bytes, {} row(s); {}",
                p.status,
                p.bytes,
                p.rows,
                if p.more {
                    "more pages follow"
                } else {
                    "the last page"
                }
            ),
        );
    }
    if let Some(n) = t.server_total {
        line("total", &format!("{n} (the server's count)"));
    }
    if !t.columns.is_empty() {
        let width = t
            .columns
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        let mut first = true;
        for c in &t.columns {
            let key = if first { "columns" } else { "" };
            first = false;
            line(
                key,
                &format!("{:<width$}  {:<9}  {}: {}", c.name, c.ty, c.from, c.reason),
            );
        }
    }
    if let Some(p) = &t.partition_by {
        line("partitions", &format!("{p}=<value>/"));
    }
    if t.parallel > 1 {
        line("parallel", &t.parallel.to_string());
    }
    if let Some(i) = &t.incremental {
        let bound = match &i.bound {
            Some(b) => format!("{} >= {b}", i.column),
            None => format!(
                "{}: every row (no stored watermark, no `initial`)",
                i.column
            ),
        };
        line("incremental", &bound);
        line(
            "  stored",
            &i.stored
                .as_ref()
                .map_or("none".to_string(), |v| v.to_string()),
        );
        if !i.lookback.is_empty() {
            line("  lookback", &i.lookback);
        }
        for [k, v] in &i.params {
            line("  sends", &format!("{k}={v}"));
        }
    }
    for n in &t.notes {
        line("note", n);
    }
    for p in &t.problems {
        line("problem", &p.message);
        if let Some(h) = &p.hint {
            line("  hint", h);
        }
    }
}
