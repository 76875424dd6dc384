//! What one `harvest` or `incremental` run is given: every source and table resolved, where
//! the output goes, and how to talk to servers. The config layer ([`crate::config`]) produces
//! it; [`crate::run::job`] runs it.

use std::path::PathBuf;

use crate::http::HttpSettings;
use crate::source::settings::SourceSettings;
use crate::store::parts::SinkSettings;

/// Everything `harvest harvest` needs, validated.
#[derive(Debug)]
pub struct HarvestSettings {
    /// DIR: snapshots (`raw/`) and datasets (`parquet/`), the paths the manifest names.
    pub out: PathBuf,
    /// Where this process's manifest, lock and state live: DIR, or `DIR/writers/<NAME>` for
    /// one of several writers sharing DIR (`--writer`).
    pub home: PathBuf,
    pub writer: Option<String>,
    /// `--out s3://…`: the store `out` (the stage) publishes to.
    pub remote: Option<std::sync::Arc<crate::store::remote::Remote>>,
    pub http: HttpSettings,
    /// S3 endpoint and region (for `--out s3://…` and for `s3://…` files tables).
    pub s3: crate::store::remote::S3Options,
    pub sink: SinkSettings,
    pub sources: Vec<SourceSettings>,
    pub wait_lock: bool,
    pub restart: bool,
    /// Tables in flight at once (`--jobs`, config `jobs`; 1: one after another). Not part of
    /// the settings digest: the output is the same whatever it is.
    pub jobs: usize,
    pub table_format: crate::store::delta::TableFormat,
    /// `harvest` or `incremental`.
    pub command: &'static str,
    /// sha256 of the resolved settings with secrets removed.
    pub config_digest: String,
    /// The resolved settings as recorded in `run_start` (no secrets).
    pub described: serde_json::Value,
}
