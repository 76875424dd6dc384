//! A REST table's cursor, as the manifest records it, and time windows.
//!
//! Guarantees:
//! - A cursor is the absolute URL of the next request when that is all it needs (so runs
//!   recorded before cursors could hold more resume unchanged), else a JSON object with the
//!   URL, the token sent in the body or a header (its JSON value, so an array stays an array),
//!   and the time window being read. Every cursor names its request completely, so a resumed
//!   run sends exactly the request an uninterrupted one would have.
//! - Windows are half-open, `[start, start + step)`, the last one ending at `to` (default: the
//!   moment the pager was made); bounds are kept as RFC 3339 instants in the cursor and sent
//!   in the configured format.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;

/// Where a REST table's next request goes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Value>,
    /// The window being read: `[start, end)` as RFC 3339 instants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<[String; 2]>,
}

impl Position {
    pub fn at(url: &url::Url) -> Self {
        Position {
            url: url.to_string(),
            token: None,
            window: None,
        }
    }

    /// The recorded form: the bare URL, or the JSON object.
    pub fn encode(&self) -> String {
        if self.token.is_none() && self.window.is_none() {
            return self.url.clone();
        }
        serde_json::to_string(self).unwrap_or_else(|_| self.url.clone())
    }

    pub fn decode(s: &str) -> Result<Self, String> {
        if s.starts_with('{') {
            serde_json::from_str(s)
                .map_err(|e| format!("the recorded cursor {s:?} is unreadable ({e})"))
        } else {
            Ok(Position {
                url: s.to_string(),
                token: None,
                window: None,
            })
        }
    }
}

/// `window`: the table is read one time window after another, each paged by the paginator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub start_param: String,
    pub end_param: String,
    pub from: DateTime<Utc>,
    /// The end of the last window (`None`: when the pager is made).
    pub to: Option<DateTime<Utc>>,
    pub step_secs: i64,
    /// strftime format of the bounds as sent (`None`: a date when `from` was a date and the
    /// step whole days, else RFC 3339 to the second).
    pub format: Option<String>,
    /// `from` was written as a date.
    pub dates: bool,
}

/// An instant from a timestamp (the forms [`crate::schema::parse_timestamp`] reads: RFC 3339,
/// `YYYY-MM-DD HH:MM:SS`, with a `T`) or a date (midnight UTC), and whether it was a date;
/// `None` when it is neither.
pub fn parse_instant(s: &str) -> Option<(DateTime<Utc>, bool)> {
    let micros = crate::schema::parse_timestamp(s)?;
    let date = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").is_ok();
    Some((DateTime::from_timestamp_micros(micros)?, date))
}

/// A step such as `1d`, `6h`, `30m`, `45s` or `2w`, in seconds.
pub fn parse_step(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(unit_secs)
}

impl Window {
    /// The bound as sent to the API.
    pub fn text(&self, t: DateTime<Utc>) -> String {
        match &self.format {
            Some(f) => t.format(f).to_string(),
            None if self.dates && self.step_secs % 86_400 == 0 => t.format("%Y-%m-%d").to_string(),
            None => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// The window starting at `start`, or `None` when `start` is at or past `to`.
    pub fn starting(&self, start: DateTime<Utc>, to: DateTime<Utc>) -> Option<[DateTime<Utc>; 2]> {
        if start >= to {
            return None;
        }
        let end = (start + Duration::seconds(self.step_secs)).min(to);
        Some([start, end])
    }
}

/// A recorded window bound.
pub fn bound(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("the recorded window bound {s:?} is unreadable ({e}); rerun with --restart")
        })
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_bare_urls_stay_urls() {
        let bare = Position {
            url: "http://h/x?a=1".into(),
            token: None,
            window: None,
        };
        assert_eq!(bare.encode(), "http://h/x?a=1");
        assert_eq!(Position::decode("http://h/x?a=1").unwrap(), bare);
        let rich = Position {
            url: "http://h/search".into(),
            token: Some(serde_json::json!([1700000000, "b-7"])),
            window: Some(["2024-01-01T00:00:00Z".into(), "2024-01-02T00:00:00Z".into()]),
        };
        assert_eq!(Position::decode(&rich.encode()).unwrap(), rich);
        assert!(Position::decode("{nope").is_err());
    }

    #[test]
    fn windows_step_and_stop_at_to() {
        let (from, dates) = parse_instant("2024-01-01").unwrap();
        assert!(dates);
        let w = Window {
            start_param: "since".into(),
            end_param: "until".into(),
            from,
            to: None,
            step_secs: parse_step("1d").unwrap(),
            format: None,
            dates,
        };
        let to = parse_instant("2024-01-02T12:00:00Z").unwrap().0;
        let [a, b] = w.starting(from, to).unwrap();
        assert_eq!(
            (w.text(a).as_str(), w.text(b).as_str()),
            ("2024-01-01", "2024-01-02")
        );
        let [_, c] = w.starting(b, to).unwrap();
        assert_eq!(rfc3339(c), "2024-01-02T12:00:00Z");
        assert_eq!(w.starting(c, to), None);
        assert_eq!(parse_step("6h"), Some(21_600));
        assert_eq!(parse_step("0d"), None);
        assert_eq!(parse_step("d"), None);
        assert_eq!(parse_step("3x"), None);
    }
}
