//! One integration-test binary (ripgrep style): one module per area, sharing `common`.

mod api_shapes;
mod cli;
mod common;
mod compression;
mod crash;
mod delta;
mod docs;
mod evolution;
mod export;
mod fault_server;
mod faults;
mod history;
mod incremental;
mod paging;
mod parallel;
mod real_datasette;
mod rest;
mod row_driven;
mod s3;
mod shard;
mod spark;
mod sql_extract;
mod value_sweep;
mod verify;
mod writers;
