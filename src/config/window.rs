//! A REST table's `window` checked and turned into its [`Window`] settings: both parameters
//! named, a start that is an instant or a date, an end after it, and a step such as `1d`.

use super::WindowConfig;
use crate::error::UsageError;
use crate::source::rest::Window;
use crate::source::rest::position::{parse_instant, parse_step};

/// The instant a TOML value names (text or a TOML date/datetime).
fn instant(
    table: &str,
    key: &str,
    v: &toml::Value,
) -> Result<(chrono::DateTime<chrono::Utc>, bool), UsageError> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => other.to_string(),
    };
    parse_instant(&text).ok_or_else(|| {
        UsageError::with_hint(
            format!("table {table:?}: window.{key} = {text:?} is not a date or an instant"),
            "write a date (\"2024-01-01\") or an RFC 3339 instant (\"2024-01-01T00:00:00Z\")",
        )
    })
}

pub(super) fn window(table: &str, w: &WindowConfig) -> Result<Window, UsageError> {
    for (key, v) in [("start_param", &w.start_param), ("end_param", &w.end_param)] {
        if v.is_empty() {
            return Err(UsageError::new(format!(
                "table {table:?}: window.{key} is empty"
            )));
        }
    }
    if w.start_param == w.end_param {
        return Err(UsageError::new(format!(
            "table {table:?}: window.start_param and window.end_param are both {:?}",
            w.start_param
        )));
    }
    let (from, dates) = instant(table, "from", &w.from)?;
    let to = match &w.to {
        Some(v) => Some(instant(table, "to", v)?.0),
        None => None,
    };
    if let Some(t) = to
        && t <= from
    {
        return Err(UsageError::new(format!(
            "table {table:?}: window.to is not after window.from"
        )));
    }
    let step_secs = parse_step(&w.step).ok_or_else(|| {
        UsageError::with_hint(
            format!("table {table:?}: window.step = {:?} is not a step", w.step),
            "write a whole number and a unit: s, m, h, d or w (e.g. \"1d\", \"6h\")",
        )
    })?;
    Ok(Window {
        start_param: w.start_param.clone(),
        end_param: w.end_param.clone(),
        from,
        to,
        step_secs,
        format: w.format.clone(),
        dates,
    })
}
