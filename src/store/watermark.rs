//! The watermark store used by `incremental` (DESIGN.md crash-safety rule 5).
//!
//! Guarantees:
//! - One versioned JSON file per (source, output) under `DIR/state/watermarks/`, holding the
//!   column, the typed high-watermark value, the run that set it and when, the identities of
//!   rows already written inside the boundary window, and the full history of values.
//! - A new value is committed in two steps around the manifest: [`Store::write_pending`]
//!   makes it durable under a pending name *after* the Parquet parts it covers are recorded;
//!   the caller then appends `table_end` (the commit point); [`Store::publish`] renames it into
//!   place. [`Store::recover`] on the next start rolls a pending file forward if its
//!   `table_end` is in the manifest and discards it otherwise. So the watermark never moves
//!   past data that is not durable, and never lags data that is.
//! - Values compare by type: integers as integers, reals as reals, text dates and datetimes
//!   (`2016-07-04`, `2016-07-04 10:00:00`, `T` form) as instants, other text as text.
//! - The boundary window is bounded: at most `max_window_ids` identities; more is an error
//!   naming the fix (a finer watermark column or a smaller lookback).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::fsutil::{atomic_write, create_dir_all_durable, sanitize_component};

pub const STATE_VERSION: u64 = 1;
pub const DEFAULT_MAX_WINDOW_IDS: usize = 200_000;

/// A watermark value with the comparison its type calls for.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    Int(i64),
    Real(f64),
    Time(NaiveDateTime),
    Text(String),
}

impl Mark {
    /// From a JSON cell; `None` for NULL (such rows never pass a `>=` filter).
    pub fn from_json(v: &Value) -> Option<Mark> {
        match v {
            Value::Number(n) => Some(match n.as_i64() {
                Some(i) => Mark::Int(i),
                None => Mark::Real(n.as_f64()?),
            }),
            Value::String(s) => Some(match parse_time(s) {
                Some(t) => Mark::Time(t),
                None => Mark::Text(s.clone()),
            }),
            _ => None,
        }
    }

    /// A configured value (`initial`): an integer, a real, an instant, or else text.
    pub fn from_text(s: &str) -> Mark {
        if let Ok(i) = s.trim().parse::<i64>() {
            return Mark::Int(i);
        }
        if let Ok(f) = s.trim().parse::<f64>()
            && f.is_finite()
        {
            return Mark::Real(f);
        }
        Mark::from_json(&Value::String(s.to_string())).unwrap_or(Mark::Text(s.to_string()))
    }

    fn rank(&self) -> u8 {
        match self {
            Mark::Int(_) | Mark::Real(_) => 0,
            Mark::Time(_) => 1,
            Mark::Text(_) => 2,
        }
    }

    /// The typed order (numbers < dates < text across kinds, as SQLite orders storage classes).
    pub fn order(&self, other: &Mark) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Mark::Int(a), Mark::Int(b)) => a.cmp(b),
            (Mark::Int(a), Mark::Real(b)) => (*a as f64).partial_cmp(b).unwrap_or(Ordering::Equal),
            (Mark::Real(a), Mark::Int(b)) => a.partial_cmp(&(*b as f64)).unwrap_or(Ordering::Equal),
            (Mark::Real(a), Mark::Real(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Mark::Time(a), Mark::Time(b)) => a.cmp(b),
            (Mark::Text(a), Mark::Text(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// The text sent as the `__gte` filter value. Datasette compares it as SQLite does: numbers
    /// numerically, ISO date texts lexicographically (which orders both formats correctly).
    pub fn filter_text(&self) -> String {
        match self {
            Mark::Int(i) => i.to_string(),
            Mark::Real(f) => format!("{f:?}"),
            Mark::Time(t) => {
                if t.time() == chrono::NaiveTime::MIN {
                    t.format("%Y-%m-%d").to_string()
                } else {
                    t.format("%Y-%m-%d %H:%M:%S%.f").to_string()
                }
            }
            Mark::Text(s) => s.clone(),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Mark::Int(i) => Value::from(*i),
            Mark::Real(f) => Value::from(*f),
            Mark::Time(_) | Mark::Text(_) => Value::String(self.filter_text()),
        }
    }

    /// The text sent in a REST table's `{watermark}` parameter: numbers as they are, instants
    /// with `format` (strftime) or else as RFC 3339 in UTC (`2026-01-05T10:00:00Z`).
    pub fn param_text(&self, format: Option<&str>) -> String {
        match self {
            Mark::Time(t) => match format {
                Some(f) => t.format(f).to_string(),
                None => t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string(),
            },
            other => other.filter_text(),
        }
    }

    /// `self - lookback`, or an error if the lookback does not fit the value's type.
    pub fn minus(&self, lookback: &Lookback) -> anyhow::Result<Mark> {
        Ok(match (self, lookback) {
            (_, Lookback::None) => self.clone(),
            (Mark::Int(i), Lookback::Count(n)) => Mark::Int(i.saturating_sub(*n)),
            (Mark::Real(f), Lookback::Count(n)) => Mark::Real(f - *n as f64),
            (Mark::Time(t), Lookback::Duration(d)) => Mark::Time(*t - *d),
            (m, lb) => bail!(
                "a lookback of {lb:?} does not fit a watermark value like {}: use a count (e.g. 100) for numbers and a duration (e.g. 2d, 36h) for dates",
                m.filter_text()
            ),
        })
    }
}

/// A date or datetime text (both formats) as an instant; midnight for a bare date.
/// RFC 3339 with `Z` or an offset (as JSON APIs send) counts as its UTC instant.
fn parse_time(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    crate::schema::parse_naive_datetime(s)
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.naive_utc())
        })
}

/// How far behind the watermark to re-read.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookback {
    None,
    Count(i64),
    Duration(chrono::Duration),
}

impl Lookback {
    /// `0`/empty → none; a bare integer → a count; `90s`, `15m`, `36h`, `7d` → a duration.
    pub fn parse(s: &str) -> Result<Lookback, String> {
        let s = s.trim();
        if s.is_empty() || s == "0" {
            return Ok(Lookback::None);
        }
        if let Ok(n) = s.parse::<i64>() {
            return if n > 0 {
                Ok(Lookback::Count(n))
            } else {
                Err(format!("lookback {s:?} must be positive"))
            };
        }
        let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: i64 = num
            .parse()
            .map_err(|_| format!("lookback {s:?} is not a count or a duration like 2d"))?;
        let d = match unit {
            "s" => chrono::Duration::seconds(n),
            "m" => chrono::Duration::minutes(n),
            "h" => chrono::Duration::hours(n),
            "d" => chrono::Duration::days(n),
            _ => return Err(format!("lookback {s:?}: unit must be s, m, h or d")),
        };
        Ok(Lookback::Duration(d))
    }
}

/// The identity of a row for de-duplication at the boundary: 128 bits of the sha256 of its
/// values' JSON text. A changed row (any column) is a new identity, i.e. a new version.
pub fn row_id(row: &[Value]) -> String {
    let mut h = Sha256::new();
    for v in row {
        h.update(v.to_string().as_bytes());
        h.update([0u8]);
    }
    crate::store::manifest::hex(&h.finalize()[..16])
}

/// The committed state of one (source, output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u64,
    pub source: String,
    pub table: String,
    pub output: String,
    pub column: String,
    /// The high-watermark (JSON of the typed value); `null` before the first commit.
    pub value: Value,
    /// Rows already written whose value is inside the boundary window (≥ value − lookback):
    /// the next run re-reads them (`>=` is inclusive) and skips them by identity.
    pub window: Vec<WindowEntry>,
    pub set_by_run: Option<String>,
    pub updated_at: Option<String>,
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowEntry {
    pub value: Value,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub run_id: String,
    pub value: Value,
    pub rows: u64,
    pub at: String,
}

/// Tracks, during a run, the highest value seen and the identities inside the trailing window.
pub struct Tracker {
    lookback: Lookback,
    old_ids: HashSet<String>,
    max: Option<Mark>,
    /// Identities of rows written this run, by value, pruned below `max - lookback`.
    window: BTreeMap<OrderedMark, Vec<String>>,
    /// Window entries carried over from the previous state.
    carried: Vec<(Mark, String)>,
    max_ids: usize,
    /// Rows below this bound are skipped (a source that cannot filter by the watermark).
    lower: Option<Mark>,
    pub skipped_dupes: u64,
    pub skipped_nulls: u64,
    pub skipped_below: u64,
}

/// A `Mark` usable as a BTreeMap key.
#[derive(Debug, Clone, PartialEq)]
struct OrderedMark(Mark);
impl Eq for OrderedMark {}
impl PartialOrd for OrderedMark {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrderedMark {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.order(&o.0)
    }
}

impl Tracker {
    pub fn new(prev: Option<&State>, lookback: Lookback, max_ids: usize) -> Self {
        let (old_ids, max, carried) = match prev {
            Some(s) => (
                s.window.iter().map(|e| e.id.clone()).collect(),
                Mark::from_json(&s.value),
                s.window
                    .iter()
                    .filter_map(|e| Some((Mark::from_json(&e.value)?, e.id.clone())))
                    .collect(),
            ),
            None => (HashSet::new(), None, vec![]),
        };
        Self {
            lookback,
            old_ids,
            max,
            window: BTreeMap::new(),
            carried,
            max_ids,
            lower: None,
            skipped_dupes: 0,
            skipped_nulls: 0,
            skipped_below: 0,
        }
    }

    /// Skip rows below `lower` here, for a source whose server does not filter by it.
    pub fn skip_below(&mut self, lower: Option<Mark>) {
        self.lower = lower;
    }

    /// Decide whether a row is new (write it) or already written (skip it).
    pub fn admit(&mut self, row: &[Value], col: usize) -> anyhow::Result<bool> {
        if let Some(f) = row.get(col).and_then(crate::schema::json::non_finite) {
            // Not a NULL to skip, and no value a stored watermark (JSON) can hold.
            anyhow::bail!(
                "a row's watermark value is {}, which cannot be a high-watermark; filter such rows out with a `params` filter on the table, or use another watermark column",
                crate::schema::float_text(f)
            );
        }
        let Some(mark) = row.get(col).and_then(Mark::from_json) else {
            self.skipped_nulls += 1;
            return Ok(false);
        };
        if self.lower.as_ref().is_some_and(|l| mark.order(l).is_lt()) {
            self.skipped_below += 1;
            return Ok(false);
        }
        let id = row_id(row);
        if self.old_ids.contains(&id) {
            self.skipped_dupes += 1;
            return Ok(false);
        }
        if self.max.as_ref().is_none_or(|m| mark.order(m).is_gt()) {
            self.max = Some(mark.clone());
        }
        self.window.entry(OrderedMark(mark)).or_default().push(id);
        self.prune()?;
        Ok(true)
    }

    fn floor(&self) -> anyhow::Result<Option<Mark>> {
        self.max
            .as_ref()
            .map(|m| m.minus(&self.lookback))
            .transpose()
    }

    fn prune(&mut self) -> anyhow::Result<()> {
        let Some(floor) = self.floor()? else {
            return Ok(());
        };
        while let Some((k, _)) = self.window.first_key_value() {
            if k.0.order(&floor).is_lt() {
                self.window.pop_first();
            } else {
                break;
            }
        }
        let n: usize = self.window.values().map(Vec::len).sum::<usize>() + self.carried.len();
        if n > self.max_ids {
            bail!(
                "more than {} rows share the boundary window of the watermark; choose a finer watermark column, a smaller --lookback, or raise --max-window-rows",
                self.max_ids
            );
        }
        Ok(())
    }

    pub fn current(&self) -> Option<&Mark> {
        self.max.as_ref()
    }

    /// The state to commit after this run.
    pub fn next_state(&self, base: State, run_id: &str, rows: u64) -> anyhow::Result<State> {
        let mut st = base;
        let floor = self.floor()?;
        let inside = |m: &Mark| floor.as_ref().is_none_or(|f| !m.order(f).is_lt());
        st.value = self.max.as_ref().map_or(Value::Null, Mark::to_json);
        let mut window: Vec<WindowEntry> = self
            .carried
            .iter()
            .filter(|(m, _)| inside(m))
            .map(|(m, id)| WindowEntry {
                value: m.to_json(),
                id: id.clone(),
            })
            .collect();
        for (m, ids) in &self.window {
            if inside(&m.0) {
                window.extend(ids.iter().map(|id| WindowEntry {
                    value: m.0.to_json(),
                    id: id.clone(),
                }));
            }
        }
        st.window = window;
        st.set_by_run = Some(run_id.to_string());
        st.updated_at = Some(crate::store::manifest::now_rfc3339());
        st.history.push(HistoryEntry {
            run_id: run_id.to_string(),
            value: st.value.clone(),
            rows,
            at: st.updated_at.clone().unwrap_or_default(),
        });
        Ok(st)
    }
}

/// The files of the store.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(out: &Path) -> Self {
        Self {
            dir: out.join("state").join("watermarks"),
        }
    }

    fn path(&self, source: &str, output: &str) -> PathBuf {
        self.dir
            .join(sanitize_component(source))
            .join(format!("{}.json", sanitize_component(output)))
    }

    fn pending_path(&self, source: &str, output: &str, run_id: &str) -> PathBuf {
        self.dir.join(sanitize_component(source)).join(format!(
            "{}.pending-{run_id}.json",
            sanitize_component(output)
        ))
    }

    pub fn load(&self, source: &str, output: &str) -> anyhow::Result<Option<State>> {
        let p = self.path(source, output);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the watermark {}", p.display()));
            }
        };
        let st: State = serde_json::from_str(&text).with_context(|| {
            format!(
                "the watermark file {} is damaged; restore it or delete it to start over",
                p.display()
            )
        })?;
        if st.version != STATE_VERSION {
            bail!(
                "the watermark file {} has version {}, this harvest reads version {STATE_VERSION}",
                p.display(),
                st.version
            );
        }
        Ok(Some(st))
    }

    /// Step 1: the new state, durable under a pending name.
    pub fn write_pending(&self, st: &State, run_id: &str) -> anyhow::Result<()> {
        let p = self.pending_path(&st.source, &st.output, run_id);
        if let Some(d) = p.parent() {
            create_dir_all_durable(d)?;
        }
        let text = serde_json::to_string_pretty(st)?;
        atomic_write(&p, text.as_bytes()).with_context(|| format!("cannot write {}", p.display()))
    }

    /// Step 3 (after `table_end` is in the manifest): the pending state becomes current.
    pub fn publish(&self, source: &str, output: &str, run_id: &str) -> anyhow::Result<()> {
        let pending = self.pending_path(source, output, run_id);
        let dest = self.path(source, output);
        std::fs::rename(&pending, &dest)
            .with_context(|| format!("cannot publish {}", dest.display()))?;
        if let Some(d) = dest.parent() {
            crate::store::fsutil::fsync_dir(d)?;
        }
        Ok(())
    }

    /// On start: roll pending states forward when their run's `table_end` is recorded,
    /// discard them otherwise. Returns (rolled forward, discarded).
    pub fn recover(&self, records: &[Value]) -> anyhow::Result<(usize, usize)> {
        let committed: HashSet<(String, String)> = records
            .iter()
            .filter(|r| r["kind"] == "table_end")
            .filter_map(|r| {
                Some((
                    r["run_id"].as_str()?.to_string(),
                    r["output"].as_str()?.to_string(),
                ))
            })
            .collect();
        let (mut fwd, mut back) = (0, 0);
        let Ok(sources) = std::fs::read_dir(&self.dir) else {
            return Ok((0, 0));
        };
        for s in sources {
            let s = s?;
            let Ok(files) = std::fs::read_dir(s.path()) else {
                continue;
            };
            for f in files {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                let Some((output_enc, rest)) = name.split_once(".pending-") else {
                    continue;
                };
                let Some(run_id) = rest.strip_suffix(".json") else {
                    continue;
                };
                let text = std::fs::read_to_string(f.path())?;
                let st: Option<State> = serde_json::from_str(&text).ok();
                let output = st
                    .as_ref()
                    .map(|s| s.output.clone())
                    .unwrap_or_else(|| output_enc.to_string());
                if committed.contains(&(run_id.to_string(), output)) {
                    let dest = s.path().join(format!("{output_enc}.json"));
                    std::fs::rename(f.path(), &dest)?;
                    crate::store::fsutil::fsync_dir(&s.path())?;
                    fwd += 1;
                } else {
                    std::fs::remove_file(f.path())?;
                    back += 1;
                }
            }
        }
        Ok((fwd, back))
    }

    /// Every committed state, for `--show-state`.
    pub fn all(&self) -> anyhow::Result<Vec<State>> {
        let mut out = vec![];
        let Ok(sources) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for s in sources {
            let s = s?;
            for f in std::fs::read_dir(s.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") && !name.contains(".pending-") && !name.starts_with('.')
                {
                    let text = std::fs::read_to_string(f.path())?;
                    out.push(
                        serde_json::from_str(&text)
                            .with_context(|| format!("damaged {}", f.path().display()))?,
                    );
                }
            }
        }
        out.sort_by(|a: &State, b| (&a.source, &a.output).cmp(&(&b.source, &b.output)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_comparison() {
        let a = Mark::from_json(&json!("2016-07-04")).unwrap();
        let b = Mark::from_json(&json!("2016-07-04 10:00:00")).unwrap();
        let c = Mark::from_json(&json!("2016-07-05")).unwrap();
        assert!(a.order(&b).is_lt() && b.order(&c).is_lt());
        let nine = Mark::from_json(&json!(9)).unwrap();
        let ten = Mark::from_json(&json!(10)).unwrap();
        assert!(
            nine.order(&ten).is_lt(),
            "integers compare as integers, not text"
        );
        assert_eq!(b.filter_text(), "2016-07-04 10:00:00");
        assert_eq!(a.filter_text(), "2016-07-04");
    }

    #[test]
    fn lookbacks() {
        assert_eq!(
            Lookback::parse("2d").unwrap(),
            Lookback::Duration(chrono::Duration::days(2))
        );
        assert_eq!(Lookback::parse("100").unwrap(), Lookback::Count(100));
        assert_eq!(Lookback::parse("0").unwrap(), Lookback::None);
        assert!(Lookback::parse("2w").is_err());
        let t = Mark::from_json(&json!("2016-07-04 10:00:00")).unwrap();
        assert_eq!(
            t.minus(&Lookback::parse("36h").unwrap())
                .unwrap()
                .filter_text(),
            "2016-07-02 22:00:00"
        );
        assert!(Mark::Int(5).minus(&Lookback::parse("2d").unwrap()).is_err());
    }

    #[test]
    fn tracker_dedups_ties_and_windows() {
        let mut t = Tracker::new(None, Lookback::None, 10);
        assert!(t.admit(&[json!(1), json!(5)], 1).unwrap());
        assert!(t.admit(&[json!(2), json!(7)], 1).unwrap());
        assert!(t.admit(&[json!(3), json!(7)], 1).unwrap());
        assert!(!t.admit(&[json!(4), Value::Null], 1).unwrap());
        // ±Infinity is a value, not a NULL to skip, and cannot be stored as a watermark.
        let inf = json!({ crate::schema::json::NON_FINITE_KEY: "Infinity" });
        let err = t.admit(&[json!(5), inf], 1).unwrap_err().to_string();
        assert!(err.contains("Infinity"), "{err}");
        assert_eq!(t.skipped_nulls, 1);
        let base = State {
            version: 1,
            source: "s".into(),
            table: "t".into(),
            output: "t".into(),
            column: "v".into(),
            value: Value::Null,
            window: vec![],
            set_by_run: None,
            updated_at: None,
            history: vec![],
        };
        let st = t.next_state(base.clone(), "r1", 3).unwrap();
        assert_eq!(st.value, json!(7));
        assert_eq!(st.window.len(), 2, "only the ties at 7 are remembered");
        // Next run: the ties come back (>= 7) and are skipped; a new tie is admitted.
        let mut t2 = Tracker::new(Some(&st), Lookback::None, 10);
        assert!(!t2.admit(&[json!(2), json!(7)], 1).unwrap());
        assert!(!t2.admit(&[json!(3), json!(7)], 1).unwrap());
        assert!(t2.admit(&[json!(9), json!(7)], 1).unwrap());
        let st2 = t2.next_state(base.clone(), "r2", 1).unwrap();
        assert_eq!(st2.value, json!(7));
        assert_eq!(st2.window.len(), 3);
        // A run with nothing new keeps the value and the ties.
        let mut t3 = Tracker::new(Some(&st2), Lookback::None, 10);
        for id in [2, 3, 9] {
            assert!(!t3.admit(&[json!(id), json!(7)], 1).unwrap());
        }
        let st3 = t3.next_state(base.clone(), "r3", 0).unwrap();
        assert_eq!((st3.value.clone(), st3.window.len()), (json!(7), 3));
        // With a lookback, rows still inside the window survive a rising watermark.
        let mut t4 = Tracker::new(Some(&st3), Lookback::Count(5), 10);
        assert!(t4.admit(&[json!(10), json!(10)], 1).unwrap());
        let st4 = t4.next_state(base, "r4", 1).unwrap();
        assert_eq!(st4.value, json!(10));
        assert_eq!(
            st4.window.len(),
            4,
            "values 7 (three) and 10 are within 10 - 5"
        );
    }
}
