//! `harvest history --html FILE`: the history as one self-contained HTML page: per dataset,
//! the duration, rows and retries of the runs that completed it over time, as inline SVG
//! charts with a marker per run coloured by its outcome (and the runs that failed or were
//! interrupted marked on every dataset's charts, as they completed none); then the summary,
//! the table `history` prints, and why each failed run failed.
//!
//! Guarantees: the page loads nothing: no script, stylesheet, font, image or link to any
//! address (the CSS is inline, the charts are SVG in the page); every text from the manifest
//! (run ids, dataset names, failure reasons) is HTML-escaped; the file is written whole (a
//! temporary file renamed into place) or not at all.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{DatasetRun, Run, Summary, human_duration};

/// Outcome colours (also the legend's). Chosen to stay apart for common colour blindness.
const OK: &str = "#1b7f5b";
const FAILED: &str = "#c62828";
const INTERRUPTED: &str = "#e08a00";
const UNFINISHED: &str = "#6c757d";
const LINE: &str = "#3d5a80";

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 170.0;
/// Room for the axis labels: left, right, top, bottom.
const PAD: (f64, f64, f64, f64) = (64.0, 14.0, 14.0, 30.0);

fn colour(outcome: &str) -> &'static str {
    match outcome {
        "ok" => OK,
        "failed" => FAILED,
        "interrupted" => INTERRUPTED,
        _ => UNFINISHED,
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One point of a chart: when, how much, and the run's outcome.
struct Point<'a> {
    at: f64,
    value: f64,
    outcome: &'a str,
    label: String,
}

/// The page for `runs` (already filtered as `history` filters them) of DIR `dir`.
pub fn page(dir: &str, runs: &[Run], summary: &Summary, table: &str) -> String {
    // The x axis: each run's start (seconds); a run without one sits after the one before.
    let mut at = Vec::with_capacity(runs.len());
    let mut last = 0.0;
    for r in runs {
        let t = r
            .started_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc).timestamp_millis() as f64 / 1000.0)
            .unwrap_or(last + 1.0);
        last = t;
        at.push(t);
    }
    let mut datasets: Vec<&str> = Vec::new();
    for d in runs.iter().flat_map(|r| &r.datasets) {
        if !datasets.contains(&d.dataset.as_str()) {
            datasets.push(&d.dataset);
        }
    }
    datasets.sort_unstable();

    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>harvest history: {title}</title>\n<style>{css}</style>\n</head>\n<body>\n\
         <h1>harvest history</h1>\n<p class=\"dir\">{title}</p>\n",
        title = escape(dir),
        css = CSS
    );
    let _ = writeln!(s, "<p class=\"summary\">{}</p>", escape(&summary.line()));
    s.push_str(&legend());
    if runs.is_empty() {
        s.push_str("<p>No runs yet.</p>\n");
    }
    for ds in &datasets {
        let _ = write!(
            s,
            "<section class=\"dataset\">\n<h2>{}</h2>\n<div class=\"charts\">\n",
            escape(ds)
        );
        let mut duration = Vec::new();
        let mut rows = Vec::new();
        let mut retries = Vec::new();
        for (r, &t) in runs.iter().zip(&at) {
            let mine: Option<&DatasetRun> = r.datasets.iter().find(|d| d.dataset == *ds);
            let label = format!(
                "{} {} ({})",
                r.run_id,
                r.started_at.as_deref().unwrap_or("-"),
                r.outcome
            );
            match mine {
                Some(d) => {
                    duration.push(Point {
                        at: t,
                        value: r.duration_ms as f64 / 1000.0,
                        outcome: &r.outcome,
                        label: format!("{label}: {}", human_duration(r.duration_ms)),
                    });
                    rows.push(Point {
                        at: t,
                        value: d.rows as f64,
                        outcome: &r.outcome,
                        label: format!("{label}: {} rows", d.rows),
                    });
                    retries.push(Point {
                        at: t,
                        value: r.retries as f64,
                        outcome: &r.outcome,
                        label: format!("{label}: {} retries", r.retries),
                    });
                }
                // A run that did not complete this dataset but did not succeed either: a
                // marker on the baseline, so a night without data shows.
                None if r.outcome != "ok" => {
                    for (series, what) in [
                        (&mut duration, human_duration(r.duration_ms)),
                        (&mut rows, "no rows".into()),
                        (&mut retries, format!("{} retries", r.retries)),
                    ] {
                        series.push(Point {
                            at: t,
                            value: f64::NAN,
                            outcome: &r.outcome,
                            label: format!("{label}: {what}"),
                        });
                    }
                }
                None => {}
            }
        }
        s.push_str(&chart("duration (s)", &duration, &at));
        s.push_str(&chart("rows", &rows, &at));
        s.push_str(&chart("retries", &retries, &at));
        s.push_str("</div>\n</section>\n");
    }
    s.push_str("<h2>Runs</h2>\n<pre class=\"table\">");
    s.push_str(&escape(table));
    s.push_str("</pre>\n</body>\n</html>\n");
    s
}

fn legend() -> String {
    let mut s = String::from("<p class=\"legend\">");
    for (name, c) in [
        ("ok", OK),
        ("failed", FAILED),
        ("interrupted", INTERRUPTED),
        ("unfinished", UNFINISHED),
    ] {
        let _ = write!(
            s,
            "<svg width=\"12\" height=\"12\" aria-hidden=\"true\"><circle cx=\"6\" cy=\"6\" r=\"5\" fill=\"{c}\"/></svg> {name} &nbsp; "
        );
    }
    s.push_str("</p>\n");
    s
}

/// The axis top: the least of 1, 2, 2.5, 5 × 10^k at or above `max` (1 for nothing).
fn nice_ceil(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let e = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * e)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * e)
}

/// `n` as an axis label: 1234567 → 1.2M.
fn short(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.1}G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", n / 1e3)
    } else if a.fract() == 0.0 {
        format!("{n:.0}")
    } else if a < 1.0 {
        format!("{n:.2}")
    } else {
        format!("{n:.1}")
    }
}

/// A time on the x axis: to the minute, or to the second when the runs span under a day.
fn day(t: f64, span: f64) -> String {
    let format = if span < 86_400.0 {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M"
    };
    DateTime::<Utc>::from_timestamp(t as i64, 0)
        .map(|d| d.format(format).to_string())
        .unwrap_or_default()
}

/// One chart: a line through the values in time order, a marker per run coloured by its
/// outcome (a run without a value: a cross on the baseline), axes labelled at both ends.
fn chart(title: &str, points: &[Point<'_>], all_at: &[f64]) -> String {
    let (left, right, top, bottom) = PAD;
    let (w, h) = (WIDTH - left - right, HEIGHT - top - bottom);
    let t0 = all_at.iter().copied().fold(f64::INFINITY, f64::min);
    let t1 = all_at.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let max = points
        .iter()
        .map(|p| p.value)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let top_value = nice_ceil(max);
    let x = |t: f64| {
        if t1 > t0 {
            left + (t - t0) / span * w
        } else {
            left + w / 2.0
        }
    };
    let y = |v: f64| top + h - (v / top_value) * h;
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure><figcaption>{t}</figcaption><svg width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\">",
        t = escape(title)
    );
    // Frame and gridlines at 0, half and the top.
    for frac in [0.0, 0.5, 1.0] {
        let gy = top + h - frac * h;
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            left + w,
            left - 6.0,
            gy + 4.0,
            short(frac * top_value)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{:.1}\" class=\"axis\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
        HEIGHT - 8.0,
        day(t0, span),
        left + w,
        HEIGHT - 8.0,
        if t1 > t0 {
            day(t1, span)
        } else {
            String::new()
        }
    );
    let line: Vec<String> = points
        .iter()
        .filter(|p| p.value.is_finite())
        .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.value)))
        .collect();
    if line.len() > 1 {
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{LINE}\" stroke-width=\"2\"/>",
            line.join(" ")
        );
    }
    for p in points {
        let c = colour(p.outcome);
        let px = x(p.at);
        if p.value.is_finite() {
            let _ = write!(
                s,
                "<circle cx=\"{px:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{c}\"><title>{}</title></circle>",
                y(p.value),
                escape(&p.label)
            );
        } else {
            let by = top + h;
            let _ = write!(
                s,
                "<g stroke=\"{c}\" stroke-width=\"3\"><title>{}</title><line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/></g>",
                escape(&p.label),
                px - 5.0,
                by - 5.0,
                px + 5.0,
                by + 5.0,
                px - 5.0,
                by + 5.0,
                px + 5.0,
                by - 5.0
            );
        }
    }
    s.push_str("</svg></figure>\n");
    s
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2a36;background:#fff}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 8px}\
.dir{color:#52606d;margin:0 0 8px;font-family:ui-monospace,monospace}\
.summary{margin:6px 0}.legend{color:#52606d;font-size:13px}\
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}\
figcaption{font-size:13px;color:#52606d;margin-bottom:2px}\
svg .grid{stroke:#d9e2ec;stroke-width:1}svg .axis{font-size:11px;fill:#52606d;font-family:system-ui,sans-serif}\
pre.table{font-size:12px;background:#f5f7fa;padding:10px;overflow-x:auto}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_manifest_is_escaped_and_nothing_is_loaded() {
        let run = Run {
            run_id: "r<1>".into(),
            outcome: "failed".into(),
            started_at: Some("2026-12-01T03:00:00Z".into()),
            datasets: vec![DatasetRun {
                dataset: "a&b<script>".into(),
                rows: 5,
                ..DatasetRun::default()
            }],
            ..Run::default()
        };
        let p = page(
            "/d<x>",
            &[run],
            &Summary::default(),
            "r<1> failed: \"quoted\"",
        );
        assert!(!p.contains("<script>"), "{p}");
        assert!(p.contains("a&amp;b&lt;script&gt;"));
        assert!(p.contains("r&lt;1&gt; failed: &quot;quoted&quot;"));
        assert!(!p.contains("src=") && !p.contains("href=") && !p.contains("@import"));
        assert!(p.contains(FAILED));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceil(91.0), 100.0);
        assert_eq!(nice_ceil(0.013), 0.02);
        assert_eq!(nice_ceil(2.2), 2.5);
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(short(0.025), "0.03");
        assert_eq!(short(1_250_000.0), "1.2M");
    }
}
