"""Read a plain harvest dataset (Hive-style partition directories) with Apache Spark and
compare it, row for row, with SQLite.

usage: read_spark.py DATASET_DIR SQLITE_DB SQLITE_TABLE

Spark discovers the partition column from the directory names (decoding `%XX`, reading
`__HIVE_DEFAULT_PARTITION__` as NULL). Its rows, columns taken in Spark's order, must equal
`SELECT <those columns> FROM <table>` in SQLite as a multiset. Prints
{"columns": [...], "rows": n, "partition_values": n}; exits 1 on a mismatch.
"""

import json
import sys

from pyspark.sql import SparkSession

from rowcompare import check, finish, sqlite_rows


def main():
    dataset, db, table = sys.argv[1:4]
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("harvest-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # Partition values stay text, as harvest wrote them (no guessing 'USA' vs 42).
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.option("basePath", dataset).parquet(dataset)
    columns = df.columns
    n = check("spark", [tuple(r) for r in df.collect()], sqlite_rows(db, table, columns))
    parts = df.select(columns[-1]).distinct().count()
    print(json.dumps({"columns": columns, "rows": n, "partition_values": parts}))
    spark.stop()


main()
finish()
