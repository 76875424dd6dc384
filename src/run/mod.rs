//! The run: everything between resolved settings and the files on disk. [`job`] owns one
//! `harvest` or `incremental` run (lock, clean-up, `run_start`/`run_end`, each source's tables
//! in order); [`pipeline`] takes one paged table from its pages to durable snapshots, manifest
//! lines and Parquet parts; [`row_driven`] does the same for a table whose unit is an input
//! row; [`quarantine`] judges rows against their table's checks and keeps the failed ones
//! aside; [`cursor`] walkers fetch ahead of the writer; [`resume`] reads the manifest back to say
//! what a new run must do first; [`context`] and [`settings`] are what the tables of a run share;
//! [`plan`] asks each table's first page the way a run would and writes nothing.
//!
//! Architecture invariant: a run never names a config file type or a command. It is handed plain
//! settings ([`settings::HarvestSettings`], [`crate::source::settings`]) and reaches servers
//! only through the source seam ([`crate::source::TableSource`], [`crate::source::Pager`]),
//! and disk only through [`crate::store`]. The order that makes it crash-safe is kept here:
//! a body is durable before its manifest line, and rows reach a part only after that line.

pub mod context;
pub mod cursor;
pub mod files;
pub mod job;
pub mod pipeline;
pub mod plan;
pub mod quarantine;
pub mod resume;
pub mod row_driven;
pub mod settings;
