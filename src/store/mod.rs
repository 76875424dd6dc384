//! What lands on disk or in a bucket: the hash-chained [`manifest`], atomic files
//! ([`fsutil`]), Parquet [`parts`], the [`delta`] log, object storage ([`remote`]), several
//! writers' homes in one DIR ([`writers`]), the run [`lock`], the [`watermark`] store and the [`unique`] key index.
//!
//! Architecture invariant: a store knows files, records and bytes, never where a page came
//! from: nothing here names a source kind, a run or a command. A file becomes visible under its
//! final name only complete and durable (temp name, fsync, rename, fsync of the directory), and
//! every on-disk format carries its version.

pub mod delta;
pub mod fsutil;
pub mod lock;
pub mod manifest;
pub mod parts;
pub mod remote;
pub mod unique;
pub mod watermark;
pub mod writers;
