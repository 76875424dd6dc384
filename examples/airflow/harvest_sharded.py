"""Airflow DAG: one harvest job split into N shards by dynamic task mapping, then verify.

Each mapped task runs `harvest harvest --shard-index-env SHARD_INDEX --shards N` with its own
SHARD_INDEX (0 .. N-1, Airflow's map index) and writer name, all into one DIR (or one
s3:// prefix) as Delta tables; `verify` runs once every shard has succeeded and checks that
the shards cover every table exactly once. A shard that fails with exit 5 (the server did not
answer) is retried by Airflow and resumes where it stopped.

Settings come from the environment of the Airflow worker (or edit the defaults):
  HARVEST_BIN     the harvest binary              (default: harvest on PATH)
  HARVEST_CONFIG  the job's config                (default: /etc/harvest/harvest.toml)
  HARVEST_OUT     the shared DIR or s3:// prefix  (default: s3://lake/northwind)
  HARVEST_SHARDS  how many shards                 (default: 3)
  HARVEST_RETRIES Airflow retries of a failed shard (default: 2, five minutes apart)
Credentials (tokens, AWS keys) reach harvest through the worker's environment as well; they
never appear in the DAG or in the command lines Airflow logs.
"""

import os
import shlex
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

HARVEST = shlex.quote(os.environ.get("HARVEST_BIN", "harvest"))
CONFIG = shlex.quote(os.environ.get("HARVEST_CONFIG", "/etc/harvest/harvest.toml"))
OUT = shlex.quote(os.environ.get("HARVEST_OUT", "s3://lake/northwind"))
SHARDS = int(os.environ.get("HARVEST_SHARDS", "3"))
RETRIES = int(os.environ.get("HARVEST_RETRIES", "2"))

with DAG(
    dag_id="harvest_sharded",
    start_date=datetime(2026, 1, 1),
    schedule="0 3 * * *",
    catchup=False,
    max_active_runs=1,
    tags=["harvest"],
) as dag:
    shards = BashOperator.partial(
        task_id="harvest_shard",
        bash_command=(
            f"{HARVEST} harvest -c {CONFIG} --out {OUT} --table-format delta "
            f"--shard-index-env SHARD_INDEX --shards {SHARDS} --writer shard-$SHARD_INDEX"
        ),
        # Keep the worker's environment (credentials, PATH) and add the shard's index.
        append_env=True,
        retries=RETRIES,
        retry_delay=timedelta(minutes=5),
    ).expand(env=[{"SHARD_INDEX": str(i)} for i in range(SHARDS)])

    verify = BashOperator(
        task_id="verify",
        bash_command=f"{HARVEST} verify --out {OUT}",
    )

    shards >> verify
