//! Command-line arguments (clap derive), raw and unvalidated: no I/O happens here, so `--help`
//! can never fail. [`crate::config`] turns them, with the config file, into settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::printer::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "harvest",
    version,
    about = "Move data out of HTTP APIs and SQLite into Parquet, with proof of where every byte came from",
    after_help = "Exit codes: 0 ok, 1 runtime failure, 2 usage/config error, 3 verify found discrepancies, \
4 authentication rejected, 5 gave up after the retry budget (rerun resumes), 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Only warnings and errors on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Debug detail on stderr.
    #[arg(long, short, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Page through Datasette tables and paginated JSON APIs: raw snapshots, a provenance
    /// manifest and typed Parquet.
    Harvest(HarvestArgs),
    /// Like `harvest`, but only rows at or past each table's stored high-watermark.
    Incremental(IncrementalArgs),
    /// Run a parameterized SQL query against a SQLite file and stream the result into Parquet.
    SqlExtract(SqlExtractArgs),
    /// Re-check an output directory: snapshots, manifest and Parquet against each other.
    Verify(VerifyArgs),
    /// The run history of an output directory: outcome, duration, rows, retries per run.
    History(HistoryArgs),
    /// One dataset of an output directory as one CSV, NDJSON or Parquet file (or stdout).
    Export(ExportArgs),
    /// What a `harvest` config will do, table by table, without writing anything: the first
    /// request, the paginator, the records, the planned columns and their types, and problems.
    Plan(PlanArgs),
    /// The config file's own tools: `harvest config schema` prints its JSON Schema.
    Config(ConfigArgs),
    /// A shell completion script on stdout, e.g. `harvest completions bash > ~/.local/share/bash-completion/completions/harvest`.
    Completions(CompletionsArgs),
    /// The manual page (roff) on stdout, or every page (one per subcommand) into a directory.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The TOML config to plan (the one `harvest -c` would run).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,

    /// The output directory whose stored watermarks give the incremental bounds (default:
    /// the config's `out`). Only read; nothing is written to it.
    #[arg(long, short = 'o', value_name = "DIR", value_parser = out_location)]
    pub out: Option<PathBuf>,

    /// Plan only these tables (by table name or dataset name); repeat for several.
    #[arg(long = "table", short = 't', value_name = "NAME")]
    pub tables: Vec<String>,

    /// Print the plan as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config file's JSON Schema (draft-07) on stdout, for editors (taplo, Even Better
    /// TOML) and validators: `harvest config schema > harvest.schema.json`.
    Schema,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, powershell or elvish.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write harvest.1 and one page per subcommand (harvest-harvest.1, …) into this directory
    /// instead of printing harvest.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Ndjson,
    Parquet,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The output directory holding the dataset.
    #[arg(long, short = 'o', value_name = "DIR", value_parser = out_location)]
    pub out: PathBuf,

    /// The dataset (a directory under DIR/parquet/, as the manifest names it).
    #[arg(long, value_name = "NAME")]
    pub dataset: String,

    /// csv, ndjson or parquet.
    #[arg(long, value_enum)]
    pub format: ExportFormat,

    /// Only these columns, in this order (comma-separated).
    #[arg(long, value_name = "COL,COL", value_delimiter = ',')]
    pub columns: Option<Vec<String>>,

    /// Write to this file (atomically); `-` or nothing: stdout.
    #[arg(long, value_name = "FILE", conflicts_with = "cache")]
    pub output: Option<PathBuf>,

    /// Write to DIR/exports/<dataset>/<format>/<digest>.<ext>, reused while the dataset is
    /// unchanged, recorded in the manifest (prints the path on stdout).
    #[arg(long)]
    pub cache: bool,

    /// Export the dataset's quarantine instead: the rows that failed its checks, each with
    /// `_checks`, `_reason`, `_run_id`, `_page`, `_row`, `_snapshot` (and `_request_id`).
    #[arg(long, conflicts_with = "cache")]
    pub quarantine: bool,

    /// With --cache: wait for a run holding DIR's lock instead of failing.
    #[arg(long)]
    pub wait_lock: bool,

    #[command(flatten)]
    pub s3: S3Args,
}

/// Where an S3-compatible server is (credentials come only from the AWS environment:
/// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, a web identity or an instance role).
#[derive(Debug, Args, Default, Clone)]
pub struct S3Args {
    /// With --out s3://…: the S3 endpoint of an S3-compatible server, e.g.
    /// http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL, else AWS). Path-style requests.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// With --out s3://…: the bucket's region (default: AWS_REGION, else us-east-1).
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
}

impl S3Args {
    pub fn options(&self) -> crate::store::remote::S3Options {
        crate::store::remote::S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            retry: None,
        }
    }
}

#[derive(Debug, Args, Default)]
pub struct HistoryArgs {
    /// The output directory whose runs to list.
    #[arg(long, short = 'o', value_name = "DIR", value_parser = out_location)]
    pub out: PathBuf,

    /// Print one JSON document on stdout instead of the table.
    #[arg(long, conflicts_with = "html")]
    pub json: bool,

    /// Write the history as one self-contained HTML page (charts of duration, rows and
    /// retries per dataset over time, outcome markers, and the table) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Only the last N runs (after --dataset).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,

    /// Only runs that completed this dataset, with its rows and watermark before/after.
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,

    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args, Default)]
pub struct VerifyArgs {
    /// The output directory to check. Repeat it (or list several after it) for the DIRs of
    /// `--shard I/N` runs: each is checked, then their split tables' shares together.
    #[arg(long, short = 'o', value_name = "DIR", required = true, num_args = 1.., value_parser = out_location)]
    pub out: Vec<PathBuf>,

    /// Check only this run's records and files.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,

    /// Skip re-hashing: check sizes, row counts and the manifest chain only.
    #[arg(long)]
    pub quick: bool,

    /// Print the report as a JSON document on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args, Default)]
pub struct SqlExtractArgs {
    /// TOML config with one or more [[extract]] sections; flags override `out`.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The SQLite database (opened read-only; never modified).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// The SQL query (one statement).
    #[arg(long, value_name = "SQL", conflicts_with = "query_file")]
    pub query: Option<String>,

    /// Read the SQL query from this file.
    #[arg(long, value_name = "FILE")]
    pub query_file: Option<PathBuf>,

    /// A named parameter `:NAME` (also `@NAME`, `$NAME`): `NAME=VALUE` binds text;
    /// `NAME=int:5`, `real:1.5`, `text:…`, `null` give it a type. Repeatable.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,

    /// The next positional `?` parameter, typed like --param values. Repeatable, in order.
    #[arg(long = "arg", value_name = "VALUE")]
    pub args: Vec<String>,

    /// Output directory (parquet/NAME/ + manifest.jsonl).
    #[arg(long, short = 'o', value_name = "DIR", value_parser = out_location)]
    pub out: Option<PathBuf>,

    /// Dataset name under DIR/parquet/.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Write one Parquet file here instead of a dataset in DIR (no manifest).
    #[arg(long, value_name = "FILE.parquet", conflicts_with_all = ["out", "partition_by"])]
    pub output: Option<PathBuf>,

    /// Hive partitions by this result column.
    #[arg(long, value_name = "COL")]
    pub partition_by: Option<String>,

    /// Column type override: integer, float, text, blob, date, timestamp. Repeatable.
    #[arg(long = "type", value_name = "COL=TYPE")]
    pub types: Vec<String>,

    /// Rows per Arrow batch handed from the reader to the encoder. Default 65536.
    #[arg(long, value_name = "N")]
    pub chunk_rows: Option<usize>,

    /// Row checks (a TOML file with the keys of a `[source.table.checks]` section): rows that
    /// fail go to DIR/quarantine/NAME/ with their reasons (not with --output FILE).
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    pub checks: Option<PathBuf>,

    /// Rows per Parquet row group (at most). Default 131072.
    #[arg(long, value_name = "N")]
    pub row_group_rows: Option<usize>,

    /// Close the open parts every N rows. Default 1000000.
    #[arg(long, value_name = "N")]
    pub part_rows: Option<u64>,

    /// zstd compression level (1-22). Default 3.
    #[arg(long, value_name = "LEVEL")]
    pub zstd_level: Option<i32>,

    /// If another run holds DIR's lock, wait for it instead of failing.
    #[arg(long)]
    pub wait_lock: bool,
}

#[derive(Debug, Args, Default)]
pub struct IncrementalArgs {
    #[command(flatten)]
    pub harvest: HarvestArgs,

    /// The watermark column of the command-line tables (config: `watermark`), e.g. OrderDate,
    /// updated_at or an integer id.
    #[arg(long, value_name = "COL")]
    pub watermark_column: Option<String>,

    /// Lower bound for the first run (config: `initial`); without it the first run takes all.
    #[arg(long, value_name = "VALUE")]
    pub since: Option<String>,

    /// Re-read this far behind the watermark for late rows (config: `lookback`): a count for
    /// numbers (e.g. 500), a duration for dates (90s, 15m, 36h, 7d). Default: none.
    #[arg(long, value_name = "N|DURATION")]
    pub lookback: Option<String>,

    /// At most this many rows may share the boundary window (their identities are stored).
    #[arg(long, value_name = "N")]
    pub max_window_rows: Option<usize>,

    /// Print the stored watermarks of DIR as JSON and exit.
    #[arg(long)]
    pub show_state: bool,
}

#[derive(Debug, Args, Default)]
pub struct HarvestArgs {
    /// TOML config listing sources and tables (see harvest.example.toml; REST APIs:
    /// examples/rest.toml). Flags override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Output directory: manifest.jsonl, raw/, parquet/, state/. Or object storage:
    /// s3://BUCKET/PREFIX (the run works in --stage and publishes there).
    #[arg(long, short = 'o', value_name = "DIR", value_parser = out_location)]
    pub out: Option<PathBuf>,

    /// Base URL of the Datasette instance, e.g. http://127.0.0.1:8001 (a REST API is
    /// configured in --config: `kind = "rest"`).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Database name on that instance (the path segment, e.g. `northwind`).
    #[arg(long, value_name = "NAME")]
    pub db: Option<String>,

    /// Name of the source in raw/<source>/ and the manifest (default: the database name).
    #[arg(long, value_name = "NAME")]
    pub source_name: Option<String>,

    /// Table or view to harvest; repeat for several. Given on the command line, these replace
    /// the config's tables (with a config of REST sources: pick these tables of the config).
    #[arg(long = "table", short = 't', value_name = "NAME")]
    pub tables: Vec<String>,

    /// Datasette filter sent with every page of the command-line tables, e.g.
    /// `ShipCountry=USA` or `OrderID__gte=11000`. Repeatable.
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub params: Vec<String>,

    /// Rows per page (`_size`); at most the server's max_returned_rows (default 1000).
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,

    /// Write Hive-style partitions `<COL>=<value>/` by this column.
    #[arg(long, value_name = "COL")]
    pub partition_by: Option<String>,

    /// Page in this column's order (`_sort`); useful for views, which otherwise have no stable order.
    #[arg(long, value_name = "COL")]
    pub sort: Option<String>,

    /// Column type override: integer, float, text, blob, date, timestamp. Repeatable.
    #[arg(long = "type", value_name = "COL=TYPE")]
    pub types: Vec<String>,

    /// Page each table N requests at a time (`harvest` only): a Datasette table with N cursors
    /// over disjoint ranges of its integer primary key; a REST table paged by offset or page
    /// number (or one request per time window) with up to N pages fetched ahead. Other tables
    /// are paged one request at a time. Default 1.
    #[arg(long, value_name = "N")]
    pub parallel: Option<u32>,

    /// Harvest up to N tables of the job at once (config `jobs`), sharing each source's HTTP
    /// client, rate limit and retry budget and the one manifest; a row-driven table still
    /// waits for its parent table. The output is the same as one table at a time. Default 1.
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,

    /// Stop the run (exit 6) once more rows than this failed their table's checks: a count
    /// (10) or a share of the rows ("5%"). Overrides each table's `checks.max_failed`; left
    /// out of the settings digest, so raising it lets a stopped run resume.
    #[arg(long, value_name = "N|P%")]
    pub max_failed: Option<String>,

    /// Bearer token from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,

    /// HTTP basic auth user (password from --password-env).
    #[arg(long, value_name = "USER", requires = "password_env")]
    pub basic_user: Option<String>,

    /// Environment variable holding the basic-auth password.
    #[arg(long, value_name = "VAR", requires = "basic_user")]
    pub password_env: Option<String>,

    /// Send the credential in this header (value from --auth-header-env).
    #[arg(long, value_name = "NAME", requires = "auth_header_env")]
    pub auth_header: Option<String>,

    /// Environment variable holding the --auth-header value.
    #[arg(long, value_name = "VAR", requires = "auth_header")]
    pub auth_header_env: Option<String>,

    /// Client-side request rate limit, e.g. `5/s`, `120/min`.
    #[arg(long, value_name = "RATE")]
    pub rate_limit: Option<String>,

    /// Attempts per request before giving up (first included). Default 8.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Seconds a run may spend on failed attempts and backoff in total. Default 900.
    #[arg(long, value_name = "SECS")]
    pub retry_budget: Option<f64>,

    /// Connect timeout in seconds. Default 10.
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<f64>,

    /// Whole-request timeout in seconds. Default 120.
    #[arg(long, value_name = "SECS")]
    pub request_timeout: Option<f64>,

    /// Give up on a response body that sends no bytes for this many seconds. Default 30.
    #[arg(long, value_name = "SECS")]
    pub stall_timeout: Option<f64>,

    /// Refuse response bodies larger than this (after decompression). Default 268435456 (256 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,

    /// Do not ask the server for compressed responses (gzip, br, zstd are asked for by default).
    #[arg(long)]
    pub no_compression: bool,

    /// Speak HTTP/1.1 only. By default an HTTPS server that offers HTTP/2 in its TLS handshake
    /// gets HTTP/2 (requests in flight at once share one connection); plain http:// is HTTP/1.1.
    #[arg(long)]
    pub http1: bool,

    /// Close the open Parquet parts (a checkpoint) every N rows. Default 1000000.
    #[arg(long, value_name = "N")]
    pub part_rows: Option<u64>,

    /// Rows per Parquet row group (at most). Default 131072.
    #[arg(long, value_name = "N")]
    pub row_group_rows: Option<usize>,

    /// zstd compression level (1-22). Default 3.
    #[arg(long, value_name = "LEVEL")]
    pub zstd_level: Option<i32>,

    /// Run the I-th of N disjoint shares of the job (`2/3`): the tables are dealt out in config
    /// order, a row-driven child goes with its parent. Give each shard its own --out, or one
    /// shared --out with a --writer name each.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,

    /// Take this shard's index from environment variable VAR, counted from 0 as Kubernetes
    /// (JOB_COMPLETION_INDEX of an Indexed Job), Airflow (a mapped task's index) and Spark (a
    /// partition's index) count: with --shards N, index K runs as --shard K+1/N.
    #[arg(
        long,
        value_name = "VAR",
        requires = "shards",
        conflicts_with = "shard"
    )]
    pub shard_index_env: Option<String>,

    /// How many shards split the job (with --shard-index-env).
    #[arg(long, value_name = "N", requires = "shard_index_env")]
    pub shards: Option<u32>,

    /// Write into a DIR that several processes share (with --table-format delta): this
    /// process's manifest, lock and state live in DIR/writers/NAME/, its snapshots and parts
    /// beside the other writers', and its parts reach the shared Delta tables by commits.
    #[arg(long, value_name = "NAME")]
    pub writer: Option<String>,

    /// Dataset layout: `parquet` (Hive-style Parquet parts) or `delta` (the same parts committed
    /// to a Delta Lake table). Default parquet.
    #[arg(long, value_name = "FORMAT")]
    pub table_format: Option<String>,

    /// If another run holds DIR's lock, wait for it instead of failing.
    #[arg(long)]
    pub wait_lock: bool,

    /// With --out s3://…: the local working copy the run writes before publishing to the
    /// store (default: one per location and writer under ~/.cache/harvest/stage/).
    #[arg(long, value_name = "DIR")]
    pub stage: Option<PathBuf>,

    #[command(flatten)]
    pub s3: S3Args,

    /// Do not resume an unfinished earlier run in DIR: start every table over. (Its snapshots
    /// and manifest lines stay; its unfinished tables' parts are replaced when this run
    /// completes them.)
    #[arg(long)]
    pub restart: bool,
}

/// `--out`: a path, a `file://` URL (the same path), or an object-store URL kept as given.
pub fn out_location(s: &str) -> Result<PathBuf, String> {
    crate::store::remote::local_or_url(s)
}
