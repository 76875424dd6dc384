"""Read a dataset whose columns widened mid-run (schema evolution) with readers nobody here
wrote, each by column name with NULL where a part lacks a column, and compare with the rows
expected (a JSON file: a list of objects, every column of the final schema).

usage: read_evolved.py parquet|delta DIR READERS EXPECTED.json
READERS: a comma-separated list of pyarrow, duckdb, pandas, polars (Parquet parts), or
deltalake, polars, duckdb (a Delta table). Prints {reader: rows} and exits 1 on a mismatch."""

import glob
import json
import math
import os
import sys

from rowcompare import finish


def norm(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def rows_of(names, tuples):
    return [{n: norm(v) for n, v in zip(names, t)} for t in tuples]


def parquet(path, reader):
    files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    if reader in ("pyarrow", "pandas"):
        import pyarrow as pa
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        schema = pa.unify_schemas([pq.read_schema(f) for f in files])
        if reader == "pyarrow":
            return ds.dataset(files, schema=schema, format="parquet").to_table().to_pylist()
        import pandas as pd

        df = pd.read_parquet(files[0] if len(files) == 1 else path, schema=schema)
        return [{k: norm(v) for k, v in r.items()} for r in df.to_dict("records")]
    if reader == "duckdb":
        import duckdb

        rel = duckdb.sql(
            f"select * from read_parquet('{path}/**/*.parquet', union_by_name=true)")
        return rows_of(rel.columns, rel.fetchall())
    if reader == "polars":
        import polars as pl

        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pl.from_arrow(pa.unify_schemas([pq.read_schema(f) for f in files])
                               .empty_table()).schema
        return pl.scan_parquet(files, schema=schema, missing_columns="insert").collect().to_dicts()
    raise SystemExit(f"unknown reader {reader}")


def delta(path, reader):
    if reader == "deltalake":
        from deltalake import DeltaTable

        return DeltaTable(path).to_pyarrow_table().to_pylist()
    if reader == "polars":
        import polars as pl

        return pl.read_delta(path).to_dicts()
    if reader == "duckdb":
        import duckdb
        import duckdb_ext

        ext_dir = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
        duck = duckdb.connect(config={"extension_directory": ext_dir})
        duck.execute("LOAD delta")
        rel = duck.sql(f"select * from delta_scan('{path}')")
        return rows_of(rel.columns, rel.fetchall())
    raise SystemExit(f"unknown reader {reader}")


def main():
    mode, path, readers, expected = sys.argv[1:5]
    want = json.load(open(expected))
    key = lambda r: r["id"]
    want = sorted(({k: norm(v) for k, v in r.items()} for r in want), key=key)
    out, bad = {}, []
    for reader in readers.split(","):
        rows = (parquet if mode == "parquet" else delta)(path, reader)
        got = sorted(({k: norm(v) for k, v in r.items()} for r in rows), key=key)
        out[reader] = len(got)
        if got != want:
            first = next((g, w) for g, w in zip(got + [None] * len(want), want) if g != w)
            bad.append(f"{reader}: {len(got)} rows; first difference: got {first[0]}, want {first[1]}")
    print(json.dumps(out))
    if bad:
        print("\n".join(bad), file=sys.stderr)
        finish(1)


main()
finish()
