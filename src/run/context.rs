//! What the tables of one run share while it runs: the per-source context handed to each
//! table, the totals that end up in `run_end` and the summary, and the run id.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::http::Client;
use crate::run::resume::ResumePoint;
use crate::run::settings::HarvestSettings;
use crate::source::settings::SourceSettings;

/// What every table of one source shares.
pub(crate) struct RunCtx<'a> {
    pub settings: &'a HarvestSettings,
    pub source: &'a SourceSettings,
    pub client: &'a Arc<Client>,
    pub run_id: &'a str,
    pub resume: Option<&'a ResumePoint>,
    pub signals: watch::Receiver<Option<&'static str>>,
    pub quiet: bool,
    /// The manifest as read at start: other runs' records, which this run does not change.
    pub history: &'a [Value],
}

impl RunCtx<'_> {
    /// The directory (relative to DIR, and full) of this run's snapshots of table `output`,
    /// created durably.
    pub fn raw_dir(&self, output: &str) -> anyhow::Result<(String, std::path::PathBuf)> {
        use crate::store::fsutil::sanitize_component;
        let rel = format!(
            "raw/{}/{}/{}",
            sanitize_component(&self.source.name),
            sanitize_component(output),
            self.run_id
        );
        let dir = self.settings.out.join(&rel);
        crate::store::fsutil::create_dir_all_durable(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok((rel, dir))
    }
}

/// Totals for `run_end` and the summary line. `pages` and `rows` are the totals of the tables
/// this run completed, whichever process of the run did the work (as in their `table_end`
/// records); `fetched_pages` counts the requests this process made, and `replayed_pages` the
/// recorded pages it replayed from snapshots.
#[derive(Default, Debug)]
pub(crate) struct Totals {
    pub tables: u64,
    pub pages: u64,
    pub rows: u64,
    pub fetched_pages: u64,
    pub replayed_pages: u64,
    pub parts: u64,
    pub warnings: Vec<String>,
    /// Incremental runs: per table, the watermark before and after.
    pub watermarks: Vec<Value>,
    /// Tables with row checks: rows quarantined, per check (whole tables, this run).
    pub quarantined: u64,
    pub checks: std::collections::BTreeMap<String, u64>,
    /// The quarantine directories of tables that quarantined rows.
    pub quarantine_dirs: Vec<String>,
}

impl Totals {
    /// Count a completed table: its run totals, and the pages this process replayed.
    pub fn add_table(&mut self, pages: u64, rows: u64, replayed: u64) {
        self.tables += 1;
        self.pages += pages;
        self.rows += rows;
        self.replayed_pages += replayed;
    }
}

impl Totals {
    /// Add what another table (run concurrently) counted.
    pub fn merge(&mut self, o: Totals) {
        self.tables += o.tables;
        self.pages += o.pages;
        self.rows += o.rows;
        self.fetched_pages += o.fetched_pages;
        self.replayed_pages += o.replayed_pages;
        self.parts += o.parts;
        self.warnings.extend(o.warnings);
        self.watermarks.extend(o.watermarks);
        self.quarantined += o.quarantined;
        for (k, v) in o.checks {
            *self.checks.entry(k).or_default() += v;
        }
        self.quarantine_dirs.extend(o.quarantine_dirs);
    }

    /// Count a completed table's checks.
    pub fn add_checks(
        &mut self,
        output: &str,
        quarantined: u64,
        by_check: &std::collections::BTreeMap<String, u64>,
    ) {
        self.quarantined += quarantined;
        for (k, v) in by_check {
            *self.checks.entry(k.clone()).or_default() += v;
        }
        if quarantined > 0 {
            self.quarantine_dirs.push(format!(
                "quarantine/{}",
                crate::store::fsutil::sanitize_component(output)
            ));
        }
    }
}

/// A new run id: the start time to the second and 16 random bits.
pub(crate) fn new_run_id() -> String {
    use rand::RngExt;
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::rng().random::<u16>()
    )
}

/// A JSON object's map (empty for any other value): the fields of a manifest record.
pub(crate) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
