"""Compare Parquet datasets with SQLite tables, value for value, reading the Parquet with pyarrow.

usage: compare_with_sqlite.py DB (PARQUET_PATH SQL)...

Each PARQUET_PATH (a part directory or one file; several joined by os.pathsep are read as one
union dataset, e.g. the shards of one table) is read with pyarrow; SQL selects the same
rows from DB with the dataset's columns (`{cols}` in SQL is replaced by them, quoted). Rows are
compared as multisets. Floats compare by their bits (so -0.0 differs from 0.0, and NaN equals
NaN); an integer from SQLite in a float column is compared as that float; text read from a
Binary column is compared as its UTF-8 bytes. Prints every difference and exits 1 on any.
"""
import math
import os
import sqlite3
import struct
import sys

import pyarrow as pa
import pyarrow.dataset as ds

from rowcompare import finish


def key(v, arrow_type):
    if v is None:
        return ("null",)
    if pa.types.is_floating(arrow_type):
        return ("float", struct.pack("<d", float(v)).hex())
    if pa.types.is_binary(arrow_type):
        return ("bytes", v.encode() if isinstance(v, str) else bytes(v))
    if isinstance(v, float):
        return ("float?", repr(v))
    return (type(v).__name__, v)


def main():
    db, pairs = sys.argv[1], sys.argv[2:]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    failures = 0
    for path, sql in zip(pairs[::2], pairs[1::2]):
        paths = path.split(os.pathsep)
        if len(paths) > 1:
            dataset = ds.dataset([ds.dataset(p, format="parquet") for p in paths])
        else:
            dataset = ds.dataset(path, format="parquet")
        table = dataset.to_table()
        names = table.schema.names
        types = [f.type for f in table.schema]
        cols = ", ".join('"' + n.replace('"', '""') + '"' for n in names)
        want_rows = conn.execute(sql.replace("{cols}", cols)).fetchall()
        got = sorted(
            tuple(key(v, t) for v, t in zip(row, types))
            for row in zip(*(table.column(i).to_pylist() for i in range(len(names))))
        )
        want = sorted(tuple(key(v, t) for v, t in zip(row, types)) for row in want_rows)
        if got != want:
            failures += 1
            print(f"{path}: {len(got)} rows in Parquet, {len(want)} in SQLite ({sql})")
            for g, w in zip(got, want):
                if g != w:
                    print(f"  first difference: parquet {g!r:.300} vs sqlite {w!r:.300}")
                    break
        else:
            print(f"{path}: {len(got)} rows match ({', '.join(map(str, types))})")
    finish(1 if failures else 0)


if __name__ == "__main__":
    main()
