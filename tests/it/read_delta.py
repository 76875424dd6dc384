"""Read one Delta table with readers nobody here wrote and compare it, row for row, with SQLite.

usage: read_delta.py TABLE_DIR SQLITE_DB SQLITE_TABLE [VERSION]

TABLE_DIR may be several Delta tables joined by os.pathsep (the shards of one table): each
reader reads every one, and their rows together must equal the SQLite table. A table may be
an s3:// URI: the readers then read it from the S3 server named by AWS_ENDPOINT_URL, with the
credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (DuckDB through its httpfs extension).

Readers: the `deltalake` package (delta-rs's Python binding), polars, and DuckDB's `delta`
extension. Each one's rows (columns in the Delta schema's order) must equal
`SELECT <those columns> FROM <table>` in SQLite, as a multiset. Prints one JSON object:
{"version": N, "columns": [...], "types": {column: Delta type}, "rows": {"deltalake": n, ...}}; exits 1
naming the reader and the first differing row on a mismatch.
"""

import json
import os
import re
import sys

import deltalake
import duckdb
import polars as pl

from rowcompare import as_date, as_timestamp, check, finish, quote, sqlite_rows


def storage_options(d):
    if not d.startswith("s3://"):
        return None
    return {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                       "AWS_SECRET_ACCESS_KEY", "AWS_REGION")} | {
        "AWS_ALLOW_HTTP": "true"}


def location(d):
    return d if d.startswith("s3://") else os.path.abspath(d)


def main():
    # os.pathsep (':') separates tables, except the one in an s3:// URI's scheme.
    table_dirs = re.split(re.escape(os.pathsep) + "(?!//)", sys.argv[1])
    db, table = sys.argv[2], sys.argv[3]
    version = int(sys.argv[4]) if len(sys.argv) > 4 else None
    tables = [deltalake.DeltaTable(d, version=version, storage_options=storage_options(d))
              for d in table_dirs]
    dt = tables[0]
    fields = dt.schema().fields
    columns = [f.name for f in fields]
    types = {f.name: str(f.type.type) for f in fields}
    # Typed columns must hold SQLite's text as that type, value for value.
    convert = {c: {"timestamp_ntz": as_timestamp, "date": as_date}[t]
               for c, t in types.items() if t in ("timestamp_ntz", "date")}
    select = ", ".join(quote(c) for c in columns)
    want = sqlite_rows(db, table, columns, convert)

    got = {}
    got["deltalake"] = [tuple(r[c] for c in columns)
                        for t in tables for r in t.to_pyarrow_table(columns=columns).to_pylist()]
    # polars' own Delta reader cannot open a table whose path has a space or a non-ASCII
    # character (pola-rs/polars#20944); for those it reads through pyarrow, and says so.
    native = all(c.isascii() and c not in " %" for d in table_dirs for c in location(d))
    got["polars" if native else "polars(pyarrow)"] = [
        row for d in table_dirs
        for row in pl.read_delta(d, version=version, use_pyarrow=not native,
                                 storage_options=storage_options(d)).select(columns).rows()]
    if version is None:
        # The `duckdb-ext-delta` wheel carries the extension; DuckDB finds it there offline.
        import duckdb_ext

        ext_dir = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
        duck = duckdb.connect(config={"extension_directory": ext_dir})
        duck.execute("LOAD delta")
        if any(d.startswith("s3://") for d in table_dirs):
            # The `duckdb-ext-httpfs` wheel carries httpfs, which reads s3:// for delta_scan.
            duck.execute("LOAD httpfs")
            endpoint = os.environ["AWS_ENDPOINT_URL"].split("://", 1)[1]
            duck.execute(
                "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, "
                "URL_STYLE 'path', USE_SSL false)"
                .replace("?", "'{}'").format(os.environ["AWS_ACCESS_KEY_ID"],
                                             os.environ["AWS_SECRET_ACCESS_KEY"],
                                             os.environ["AWS_REGION"], endpoint))
        got["duckdb"] = [
            row for d in table_dirs
            for row in duck.execute(f"select {select} from delta_scan(?)",
                                    [location(d)]).fetchall()]

    counts = {reader: check(reader, rows, want) for reader, rows in got.items()}
    print(json.dumps({"version": dt.version(), "columns": columns, "types": types,
                      "rows": counts}))


main()
finish()
