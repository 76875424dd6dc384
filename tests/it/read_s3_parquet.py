"""Read one plain Parquet dataset straight from an S3 server with readers nobody here wrote,
and compare it, row for row, with SQLite.

usage: read_s3_parquet.py s3://BUCKET/PREFIX/parquet/DATASET SQLITE_DB SQLITE_TABLE

The S3 server is AWS_ENDPOINT_URL, the credentials AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
Readers: DuckDB 1.4.4 through its httpfs extension (`read_parquet` over the dataset's parts),
and pyarrow's S3 filesystem (`pyarrow.dataset`). Prints one JSON object
{"columns": [...], "rows": {"duckdb": n, "pyarrow": n}}; exits 1 naming the reader and the
first differing rows on a mismatch.
"""

import json
import os
import sys

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from rowcompare import check, finish, quote, sqlite_rows


def main():
    uri, db, table = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    fs = pafs.S3FileSystem(access_key=os.environ["AWS_ACCESS_KEY_ID"],
                           secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                           region=os.environ["AWS_REGION"],
                           endpoint_override=endpoint.split("://", 1)[1],
                           scheme=endpoint.split("://", 1)[0])
    dataset = ds.dataset(uri[len("s3://"):], filesystem=fs, format="parquet",
                         partitioning="hive")
    columns = [c for c in dataset.schema.names]
    want = sqlite_rows(db, table, columns)
    got = {"pyarrow": [tuple(r[c] for c in columns)
                       for r in dataset.to_table(columns=columns).to_pylist()]}

    import duckdb_ext

    ext_dir = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
    duck = duckdb.connect(config={"extension_directory": ext_dir})
    duck.execute("LOAD httpfs")
    duck.execute(
        "CREATE SECRET (TYPE s3, KEY_ID '{}', SECRET '{}', REGION '{}', ENDPOINT '{}', "
        "URL_STYLE 'path', USE_SSL false)".format(
            os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ["AWS_REGION"], endpoint.split("://", 1)[1]))
    select = ", ".join(quote(c) for c in columns)
    got["duckdb"] = duck.execute(
        f"select {select} from read_parquet(?, hive_partitioning = true)",
        [uri + "/**/*.parquet"]).fetchall()

    counts = {reader: check(reader, rows, want) for reader, rows in got.items()}
    print(json.dumps({"columns": columns, "rows": counts}))


main()
finish()
