"""Read one Delta table with readers nobody here wrote and compare it, row for row, with SQLite.

usage: read_delta.py TABLE_DIR SQLITE_DB SQLITE_TABLE [VERSION]

TABLE_DIR may be several Delta tables joined by os.pathsep (the shards of one table): each
reader reads every one, and their rows together must equal the SQLite table.

Readers: the `deltalake` package (delta-rs's Python binding), polars, and DuckDB's `delta`
extension. Each one's rows (columns in the Delta schema's order) must equal
`SELECT <those columns> FROM <table>` in SQLite, as a multiset. Prints one JSON object:
{"version": N, "columns": [...], "types": {column: Delta type}, "rows": {"deltalake": n, ...}}; exits 1
naming the reader and the first differing row on a mismatch.
"""

import json
import os
import sys

import deltalake
import duckdb
import polars as pl

from rowcompare import as_date, as_timestamp, check, quote, sqlite_rows


def main():
    table_dirs, db, table = sys.argv[1].split(os.pathsep), sys.argv[2], sys.argv[3]
    version = int(sys.argv[4]) if len(sys.argv) > 4 else None
    tables = [deltalake.DeltaTable(d, version=version) for d in table_dirs]
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
    native = all(c.isascii() and c not in " %" for d in table_dirs for c in os.path.abspath(d))
    got["polars" if native else "polars(pyarrow)"] = [
        row for d in table_dirs
        for row in pl.read_delta(d, version=version, use_pyarrow=not native).select(columns).rows()]
    if version is None:
        # The `duckdb-ext-delta` wheel carries the extension; DuckDB finds it there offline.
        import duckdb_ext

        ext_dir = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
        duck = duckdb.connect(config={"extension_directory": ext_dir})
        duck.execute("LOAD delta")
        got["duckdb"] = [
            row for d in table_dirs
            for row in duck.execute(f"select {select} from delta_scan(?)",
                                    [os.path.abspath(d)]).fetchall()]

    counts = {reader: check(reader, rows, want) for reader, rows in got.items()}
    print(json.dumps({"version": dt.version(), "columns": columns, "types": types,
                      "rows": counts}))


main()
