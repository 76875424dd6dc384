"""PySpark driver: one harvest job run as N shards, one Spark task each, then read back.

    python examples/spark/harvest_shards.py --shards 3 --out /shared/lake -- \
        -c harvest.toml                      # or: --url … --db … --table … (harvest's flags)
    spark-submit examples/spark/harvest_shards.py --master yarn --shards 8 --out /mnt/lake -- -c job.toml

Each task of `mapPartitionsWithIndex` over N partitions runs, for its index K (0-based),

    harvest harvest ARGS --out DIR --table-format delta --shard K+1/N --writer shard-K

so the shards write into one DIR as writers of the same Delta tables. The binary must be on
every executor (HARVEST_BIN, else `harvest` on PATH), and DIR must be one directory for all of
them (a shared filesystem). A shard that exits non-zero fails its task with harvest's exit
code and the end of its log; Spark's task retry (`spark.task.maxFailures`, or `local[N,F]`)
reruns it, and the rerun resumes where that shard stopped. Credentials reach harvest through
the executors' environment and never appear on a command line.

Then the driver runs `harvest verify --out DIR` (every shard's files, and that the shards
cover each table exactly once) and reads each Delta table with Spark from its log's live
files, printing one JSON line per table: {"table", "rows", "distinct_rows", "columns"}.
Exit: 0 when every shard and verify succeeded, else 1 (the failing step is printed).
"""

import argparse
import json
import os
import subprocess
import sys

from pyspark.sql import SparkSession


def shard_task(harvest, args, out, shards):
    """The function each partition runs: one shard of the job."""

    def run(index, _rows):
        cmd = [harvest, "harvest", *args, "--out", out, "--table-format", "delta",
               "--shard", f"{index + 1}/{shards}", "--writer", f"shard-{index}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"shard {index + 1}/{shards} exited {done.returncode}:\n{done.stderr[-4000:]}")
        yield index

    return run


def live_files(table_dir):
    """The Parquet files a Delta table holds now: its log's adds less its removes."""
    log = os.path.join(table_dir, "_delta_log")
    live = {}
    for name in sorted(n for n in os.listdir(log) if n.endswith(".json")):
        with open(os.path.join(log, name)) as f:
            for line in f:
                action = json.loads(line)
                if "add" in action:
                    live[action["add"]["path"]] = True
                elif "remove" in action:
                    live.pop(action["remove"]["path"], None)
    return [os.path.join(table_dir, p) for p in live]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, required=True)
    ap.add_argument("--out", required=True, help="the DIR every shard writes into")
    ap.add_argument("--master", help="Spark master (default: local[N], one core per shard)")
    ap.add_argument("harvest_args", nargs=argparse.REMAINDER,
                    help="after --: harvest harvest's flags (-c FILE, --url, --table, …)")
    opts = ap.parse_args()
    args = opts.harvest_args[1:] if opts.harvest_args[:1] == ["--"] else opts.harvest_args
    harvest = os.environ.get("HARVEST_BIN", "harvest")
    out = os.path.abspath(opts.out)

    spark = (SparkSession.builder.master(opts.master or f"local[{opts.shards}]")
             .appName("harvest-shards").config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        done = (spark.sparkContext.parallelize(range(opts.shards), opts.shards)
                .mapPartitionsWithIndex(shard_task(harvest, args, out, opts.shards))
                .collect())
    except Exception as e:  # a shard's task failed after Spark's retries
        print(f"harvest_shards: a shard failed: {e}", file=sys.stderr)
        return 1
    print(f"harvest_shards: shards {sorted(done)} finished", file=sys.stderr)

    verify = subprocess.run([harvest, "verify", "--out", out], capture_output=True, text=True)
    if verify.returncode != 0:
        print(f"harvest_shards: verify exited {verify.returncode}:\n{verify.stderr}",
              file=sys.stderr)
        return 1

    parquet = os.path.join(out, "parquet")
    for table in sorted(os.listdir(parquet)):
        table_dir = os.path.join(parquet, table)
        files = live_files(table_dir)
        df = spark.read.option("basePath", table_dir).parquet(*files)
        print(json.dumps({"table": table, "rows": df.count(),
                          "distinct_rows": df.distinct().count(), "columns": df.columns}))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
