"""Benchmark driver: runs harvest and its peers on the same input, several times each, in one
run, and prints a Markdown table of medians, ratios and peak RSS. Invoked by scripts/bench.

sql-extract cases (issue: "sql-extract ... fast and in bounded memory"):
  floor   - target/release/examples/sqlite_floor: steps every row, reads every value, writes nothing
  harvest - harvest sql-extract --output FILE.parquet (zstd)
  pandas  - read_sql_query(chunksize=25000) -> pyarrow.ParquetWriter (zstd)
  duckdb  - DuckDB 1.4.4 + sqlite extension: COPY (query over sqlite_scan) TO parquet (zstd)
harvest cases ("Order Details" of the scale-1 fixture, page size 1000, local Datasette 0.65.5 with
default settings; "local" direct, and through examples/delay_proxy adding 20 ms to each request):
  floor (rust)   - examples/http_floor: reqwest, follows `next` with harvest's query parameters,
                   parses each body only to find `next`, keeps nothing (the strict floor)
  floor (python) - the same with a requests session and json
  harvest        - harvest harvest --table "Order Details" into a fresh DIR
  harvest --type (all columns) - the same with every column's type given by --type (no type probe)
  harvest --parallel 3 - the same with three key-range cursors
  harvest --table-format delta - the same with the dataset written as a Delta Lake table (one
                   commit per checkpoint; what the Delta log costs over plain Parquet)
  harvest --part-rows 20000 [--table-format delta] - a checkpoint every 20,000 rows (30 parts;
                   with Delta, 30 commits): the cost of one Delta commit
  peer A         - requests session, sequential _next pagination, a JSON snapshot + manifest line
                   per page, rows accumulated into a pandas DataFrame and written to Parquet at the end
Then harvest's peak RSS on the scale-10 fixture (one run each: sequential, --parallel 3, Delta).
compression case (`--suite compression`): the same table from Datasette 0.65.5 with the
datasette-gzip plugin (its own venv), through examples/delay_proxy adding 20 ms per request and
capping responses at 50 Mbit/s: harvest (asks for gzip, br, zstd) against harvest
--no-compression; wall time and the bytes on the wire (run_end totals.wire_bytes).
rest cases (`--suite rest`): harvest as a REST client (`kind = "rest"`, `--no-compression`
like the floors) against json-server 0.17.4 serving fixtures/generate_rest.py's nested events
(`--rest-records`, default 300,000; `_page`/`_limit=1000`, Link headers), and against
Datasette 0.65.5 read as a plain JSON API (Order Details, scale 1, `_shape=objects`, Link):
  floor (rust)   - examples/rest_floor: follows Link rel="next", reads each body, parses nothing
  floor (python) - the same with a requests session
  harvest        - harvest harvest --config (a REST table, paginate = "link")
  peer (python)  - requests following Link, a snapshot + manifest line per page, records
                   flattened with pandas.json_normalize and written to Parquet at the end
Then harvest's peak RSS on json-server with a third of the records, to show memory is flat.
rows cases (`--suite rows`): row-driven requests, one GET /items/{id} per row of a SQLite table
(`--rows-inputs`, default 20,000 ids) against examples/item_server (a one-thread keep-alive
HTTP/1.1 server answering small JSON objects), at concurrency 1, 8 and 32:
  harvest        - a `for_each` table (sqlite input), snapshots, manifest, Parquet
  aiohttp        - Python asyncio + aiohttp 3, N workers over one connection pool, reading the
                   ids from SQLite, parsing each body, rows kept in memory and written to Parquet
                   (pyarrow) at the end; no snapshots or manifest
Then harvest's peak RSS at concurrency 32 for each count in `--rows-rss` (default 100,000,
300,000 and 1,000,000 input rows), to show memory stays flat as the input grows.
export cases (`--suite export`): the 10x fixture's Order Details (5,909,926 rows) as a dataset
of Parquet parts (written once by `harvest sql-extract --part-rows 1000000`), exported to one
file:
  harvest csv / parquet - harvest export --format csv|parquet --output FILE
  duckdb csv / parquet  - DuckDB 1.4.4: COPY (SELECT * FROM read_parquet('DIR/**/*.parquet'))
                          TO FILE (HEADER) / (FORMAT parquet, COMPRESSION zstd)
shard cases (`--suite shard`): Order Details of the `--shard-scale` fixture (default 10:
5,909,926 rows) from three Datasette 0.65.5 processes on the same file behind
examples/delay_proxy in round-robin mode (each new connection goes to the next server), so the
server side has three processes' capacity:
  one process                 - harvest harvest (one cursor)
  one process --parallel 6    - the same with six key-range cursors
  3 shards --parallel 6       - three harvest processes at once, `--parallel 6 --shard I/3`
                                (two slices each), each into its own DIR; wall time is the
                                slowest shard's, RSS the largest of the three
  3 writers --parallel 6, one Delta DIR - the same three processes with `--table-format delta
                                --writer shard-I` into one DIR: one Delta table, committed to
                                by all three at once
s3 cases (`--suite s3`): Order Details at scale 1 (594,225 rows, 595 pages) from one
Datasette 0.65.5, written to a local DIR and to object storage (`--out s3://…`) on a moto
5.2.5 server on loopback (an S3-compatible server in Python: its per-request cost is far above
a real store's, so the ratio is an upper bound on what publishing adds), as plain Parquet and
as a Delta table; a checkpoint every 100,000 rows:
  local DIR, parquet / s3 (moto), parquet / local DIR, delta / s3 (moto), delta
latency cases (`--suite latency`, bench/latency.py): servers behind examples/delay_proxy adding
`--latency-ms` per request; sequential harvest against --jobs / parallel / concurrency, dlt's
rest_api and a parallelized dlt transformer, and HTTP/2 against HTTP/1.1 over TLS.
Wall time and peak RSS come from /usr/bin/time; the machine is shared, so medians matter.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, glob, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARVEST = os.path.join(ROOT, "target/release/harvest")
FLOOR = os.path.join(ROOT, "target/release/examples/sqlite_floor")
HTTP_FLOOR_RS = os.path.join(ROOT, "target/release/examples/http_floor")
DELAY_PROXY = os.path.join(ROOT, "target/release/examples/delay_proxy")
REST_FLOOR = os.path.join(ROOT, "target/release/examples/rest_floor")

CASES = [
    ("order lines", 'select * from "Order Details"', {}),
    ("join + params",
     'select o.OrderID, o.OrderDate, o.ShipCountry, d.ProductID, d.UnitPrice, d.Quantity, d.Discount '
     'from Orders o join "Order Details" d on d.OrderID = o.OrderID '
     'where o.ShipCountry = :country and d.Quantity >= :minq',
     {"country": "USA", "minq": 10}),
]

PANDAS = r'''
import sys, json, sqlite3, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
db, sql, params, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
w = None
for chunk in pd.read_sql_query(sql, con, params=params, chunksize=25000):
    t = pa.Table.from_pandas(chunk, preserve_index=False)
    if w is None:
        w = pq.ParquetWriter(out, t.schema, compression="zstd")
    w.write_table(t.cast(w.schema) if t.schema != w.schema else t)
w.close()
'''

DUCKDB = r'''
import sys, json, glob, os, duckdb, duckdb_ext
db, sql, params, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
ext = glob.glob(os.path.join(list(duckdb_ext.__path__)[0], "extensions", "v1.4.4", "*", "sqlite_scanner.duckdb_extension"))[0]
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")
con.execute(f"ATTACH '{db}' AS src (TYPE sqlite, READ_ONLY)")
con.execute("USE src")
q = sql
for k, v in params.items():  # DuckDB's COPY takes no prepared parameters: inline literals
    q = q.replace(":" + k, str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'")
con.execute(f"COPY ({q}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
'''


HTTP_FLOOR = r'''
import sys, json, requests
base, table = sys.argv[1], sys.argv[2]
s = requests.Session()
params = {"_size": "1000", "_json_infinity": "on", "_nocount": "1", "_nofacet": "1", "_nosuggest": "1"}
nxt, pages = None, 0
while True:
    p = dict(params)
    if nxt:
        p["_next"] = nxt
    r = s.get(f"{base}/{table}.json", params=p)
    r.raise_for_status()
    nxt = r.json().get("next")
    pages += 1
    if not nxt:
        break
print(pages)
'''

PEER_A = r'''
import sys, os, json, hashlib, datetime, requests, pandas as pd
base, table, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.join(out, "raw"), exist_ok=True)
s = requests.Session()
params = {"_size": "1000", "_nocount": "1", "_nofacet": "1", "_nosuggest": "1"}
rows, columns, nxt, page = [], None, None, 0
with open(os.path.join(out, "manifest.jsonl"), "a") as man:
    while True:
        p = dict(params)
        if nxt:
            p["_next"] = nxt
        r = s.get(f"{base}/{table}.json", params=p)
        r.raise_for_status()
        page += 1
        path = os.path.join(out, "raw", f"page-{page:06}.json")
        with open(path, "wb") as f:
            f.write(r.content)
        body = r.json()
        man.write(json.dumps({"page": page, "path": path, "sha256": hashlib.sha256(r.content).hexdigest(),
                              "bytes": len(r.content), "rows": len(body["rows"]),
                              "fetched_at": datetime.datetime.utcnow().isoformat()}) + "\n")
        columns = body["columns"]
        rows.extend(body["rows"])
        nxt = body.get("next")
        if not nxt:
            break
pd.DataFrame(rows, columns=columns).to_parquet(os.path.join(out, "out.parquet"), compression="zstd")
'''


REST_FLOOR_PY = r'''
import sys, requests
s = requests.Session()
s.headers["Accept-Encoding"] = "identity"
url, pages = sys.argv[1], 0
while url:
    r = s.get(url)
    r.raise_for_status()
    _ = r.content
    pages += 1
    url = r.links.get("next", {}).get("url")
print(pages)
'''

REST_PEER = r'''
import sys, os, json, hashlib, datetime, requests, pandas as pd
url, records_key, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.join(out, "raw"), exist_ok=True)
s = requests.Session()
s.headers["Accept-Encoding"] = "identity"
frames, page = [], 0
with open(os.path.join(out, "manifest.jsonl"), "a") as man:
    while url:
        r = s.get(url)
        r.raise_for_status()
        page += 1
        path = os.path.join(out, "raw", f"page-{page:06}.json")
        with open(path, "wb") as f:
            f.write(r.content)
        body = r.json()
        recs = body[records_key] if records_key else body
        man.write(json.dumps({"page": page, "url": url, "path": path, "bytes": len(r.content),
                              "sha256": hashlib.sha256(r.content).hexdigest(), "rows": len(recs),
                              "fetched_at": datetime.datetime.utcnow().isoformat()}) + "\n")
        frames.append(pd.json_normalize(recs, sep="__"))
        url = r.links.get("next", {}).get("url")
df = pd.concat(frames, ignore_index=True)
for c in df.columns:  # arrays as JSON text, so each Parquet column has one type
    if df[c].map(lambda v: isinstance(v, list)).any():
        df[c] = df[c].map(json.dumps)
df.to_parquet(os.path.join(out, "out.parquet"), compression="zstd")
'''

REST_TOOLS = ["floor (rust)", "floor (python)", "harvest", "peer (python)"]

ITEM_SERVER = os.path.join(ROOT, "target/release/examples/item_server")

ROWS_PEER = r'''
import sys, asyncio, sqlite3, json, aiohttp, pyarrow as pa, pyarrow.parquet as pq
db, base, conc, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def flat(rec, prefix=""):
    o = {}
    for k, v in rec.items():
        if isinstance(v, dict):
            o.update(flat(v, prefix + k + "__"))
        elif isinstance(v, list):
            o[prefix + k] = json.dumps(v)
        else:
            o[prefix + k] = v
    return o

async def main():
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    q = asyncio.Queue(maxsize=conc * 4)
    rows = []
    async def worker(session):
        while True:
            i = await q.get()
            if i is None:
                return
            async with session.get(f"{base}/items/{i}") as r:
                rec = json.loads(await r.read())
                rec = flat(rec)
                rec["_input__id"] = i
                rec["_status"] = r.status
                rows.append(rec)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        ws = [asyncio.create_task(worker(s)) for _ in range(conc)]
        for (i,) in con.execute("select id from ids"):
            await q.put(i)
        for _ in ws:
            await q.put(None)
        await asyncio.gather(*ws)
    pq.write_table(pa.Table.from_pylist(rows), out + "/out.parquet", compression="zstd")

asyncio.run(main())
'''


DUCKDB_EXPORT = r'''
import sys, duckdb
src, fmt, out = sys.argv[1], sys.argv[2], sys.argv[3]
opts = "(HEADER)" if fmt == "csv" else "(FORMAT parquet, COMPRESSION zstd)"
duckdb.sql(f"COPY (SELECT * FROM read_parquet('{src}/**/*.parquet')) TO '{out}' {opts}")
'''


def export_suite(a, work):
    db = fixture(work, a.scale)
    out = os.path.abspath(os.path.join(work, f"export-src-s{a.scale}"))
    if not os.path.exists(os.path.join(out, "parquet", "order_details")):
        subprocess.run([HARVEST, "-q", "sql-extract", "--db", db, "--query", 'select * from "Order Details"',
                        "--name", "order_details", "--part-rows", "1000000", "--out", out], check=True)
    src = os.path.join(out, "parquet", "order_details")
    nparts = len(glob.glob(os.path.join(src, "*.parquet")))
    dest_dir = os.path.join(work, "export-out")
    os.makedirs(dest_dir, exist_ok=True)
    results = {}
    cases = [(t, f) for f in ("csv", "parquet") for t in ("harvest", "duckdb")]
    for rep in range(a.reps):
        for tool, fmt in cases:
            dest = os.path.join(dest_dir, f"x.{fmt}")
            if os.path.exists(dest):
                os.remove(dest)
            if tool == "harvest":
                cmd = [HARVEST, "-q", "export", "--out", out, "--dataset", "order_details", "--format", fmt, "--output", dest]
            else:
                cmd = [sys.executable, "-c", DUCKDB_EXPORT, src, fmt, dest]
            secs, mib = timed(cmd)
            results.setdefault((tool, fmt), []).append((secs, mib, os.path.getsize(dest)))
            print(f"  export-suite {tool:8} {fmt:8} rep {rep + 1}: {secs:6.2f}s {mib:7.1f} MiB", file=sys.stderr)
    print(f"\nExport benchmark, Order Details x{a.scale} ({nparts} parts), {a.reps} reps, {datetime.date.today()} "
          f"(`scripts/bench --suite export --reps {a.reps}`)\n")
    print("| format | tool | median wall s | harvest ÷ duckdb (paired median) | peak RSS MiB (max) | file MB |")
    print("|---|---|---:|---:|---:|---:|")
    for fmt in ("csv", "parquet"):
        for tool in ("harvest", "duckdb"):
            r = results[(tool, fmt)]
            med = statistics.median(x for x, _, _ in r)
            paired = statistics.median(h / d for (h, _, _), (d, _, _) in zip(results[("harvest", fmt)], results[("duckdb", fmt)]))
            print(f"| {fmt} | {tool} | {med:.2f} | {f'{paired:.2f}' if tool == 'harvest' else ''} | "
                  f"{max(m for _, m, _ in r):.0f} | {r[0][2] / 1e6:.0f} |")


def ids_db(work, n):
    """A SQLite table `ids` of 1..=n, made once."""
    import sqlite3
    db = os.path.abspath(os.path.join(work, f"ids-{n}.db"))
    if not os.path.exists(db):
        con = sqlite3.connect(db + ".tmp")
        con.execute("create table ids(id integer primary key)")
        con.executemany("insert into ids values (?)", ((i,) for i in range(1, n + 1)))
        con.commit(); con.close()
        os.replace(db + ".tmp", db)
    return db


def rows_cmd(tool, db, port, conc, work, out):
    if tool == "aiohttp":
        os.makedirs(out, exist_ok=True)
        return [sys.executable, "-c", ROWS_PEER, db, f"http://127.0.0.1:{port}", str(conc), out]
    config = os.path.join(work, "rows-bench.toml")
    with open(config, "w") as f:
        f.write(f'''[[source]]\nkind = "rest"\nurl = "http://127.0.0.1:{port}"\n[[source.table]]\nname = "items"\n'''
                f'''path = "/items/{{id}}"\nfor_each = {{ sqlite = "{db}", query = "select id from ids" }}\n'''
                f'''concurrency = {conc}\n''')
    return [HARVEST, "-q", "harvest", "--config", config, "--out", out, "--no-compression"]


def rows_suite(a, work):
    import shutil
    out = os.path.join(work, "rows-out")
    n = a.rows_inputs
    db = ids_db(work, n)
    srv = subprocess.Popen([ITEM_SERVER, "0"], stdout=subprocess.PIPE, text=True)
    port = int(srv.stdout.readline())
    results = {}
    concs = [1, 8, 32]
    tools = ["harvest", "aiohttp"]
    rss = []
    try:
        for rep in range(a.reps):
            for conc in concs:
                for tool in tools:  # interleaved
                    shutil.rmtree(out, ignore_errors=True)
                    secs, mib = timed(rows_cmd(tool, db, port, conc, work, out))
                    results.setdefault((conc, tool), []).append((secs, mib))
                    print(f"  rows-suite c={conc:<3} {tool:8} rep {rep + 1}: {secs:6.2f}s {n / secs:8.0f} req/s {mib:7.1f} MiB",
                          file=sys.stderr)
        for big in [int(x) for x in a.rows_rss.split(",") if x]:
            dbb = ids_db(work, big)
            shutil.rmtree(out, ignore_errors=True)
            secs, mib = timed(rows_cmd("harvest", dbb, port, 32, work, out))
            manifest_mb = os.path.getsize(os.path.join(out, "manifest.jsonl")) / 1e6
            rss.append((big, secs, mib, manifest_mb))
            print(f"  rows-suite rss {big:>9,} inputs: {secs:6.1f}s {mib:7.1f} MiB", file=sys.stderr)
    finally:
        srv.terminate()
        shutil.rmtree(out, ignore_errors=True)
    print(f"\nRow-driven benchmark, {n:,} GET requests, {a.reps} reps, {datetime.date.today()} "
          f"(`scripts/bench --suite rows --reps {a.reps}`)\n")
    print("| concurrency | tool | median wall s | requests/s | harvest ÷ aiohttp requests/s (paired median) | peak RSS MiB (max) |")
    print("|---:|---|---:|---:|---:|---:|")
    for conc in concs:
        for tool in tools:
            med = statistics.median(x for x, _ in results[(conc, tool)])
            paired = statistics.median(p / h for (h, _), (p, _) in
                                       zip(results[(conc, "harvest")], results[(conc, "aiohttp")]))
            ratio = f"{paired:.2f}" if tool == "harvest" else ""
            print(f"| {conc} | {tool} | {med:.2f} | {n / med:,.0f} | {ratio} | "
                  f"{max(m for _, m in results[(conc, tool)]):.0f} |")
    if rss:
        print("\n| input rows (concurrency 32) | wall s | requests/s | peak RSS MiB | manifest MB |")
        print("|---:|---:|---:|---:|---:|")
        for big, secs, mib, mmb in rss:
            print(f"| {big:,} | {secs:.1f} | {big / secs:,.0f} | {mib:.0f} | {mmb:.0f} |")


def start_json_server(work, records):
    """json-server 0.17.4 (installed by scripts/bench) on generated events; (process, port)."""
    import socket
    db = os.path.abspath(os.path.join(work, f"events-{records}.json"))
    if not os.path.exists(db):
        print(f"generating {db} ...", file=sys.stderr)
        subprocess.run([sys.executable, os.path.join(ROOT, "fixtures/generate_rest.py"), "--out", db,
                        "--records", str(records)], check=True)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    js = subprocess.Popen([os.path.join(work, "npm-json-server", "node_modules", ".bin", "json-server"), db,
                           "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_ready(js, f"http://127.0.0.1:{port}/events?_limit=1", 300, "json-server"), port


def rest_cmd(tool, case, work, out):
    """The command for one tool on one REST case (start URL, records key, harvest table)."""
    if tool == "floor (rust)":
        return [REST_FLOOR, case["start"]]
    if tool == "floor (python)":
        return [sys.executable, "-c", REST_FLOOR_PY, case["start"]]
    if tool == "peer (python)":
        return [sys.executable, "-c", REST_PEER, case["start"], case["records_key"], out]
    config = os.path.join(work, "rest-bench.toml")
    with open(config, "w") as f:
        f.write(case["config"])
    return [HARVEST, "-q", "harvest", "--config", config, "--out", out, "--no-compression"]


def json_server_case(port):
    """json-server's events, 1000 per page, followed by its Link headers."""
    return {
        "start": f"http://127.0.0.1:{port}/events?_page=1&_limit=1000",
        "records_key": "",
        "config": f'''[[source]]\nkind = "rest"\nurl = "http://127.0.0.1:{port}"\n[[source.table]]\nname = "events"\n'''
                  '''params = { _page = 1, _limit = 1000 }\npaginate = "link"\n''',
    }


def rest_suite(a, work):
    import shutil
    out = os.path.join(work, "r-out")
    results, rss_small = {}, None
    n = a.rest_records
    wanted = a.rest_cases.split(",")
    js, jport = start_json_server(work, n) if "json-server" in wanted else (None, 0)
    db = fixture(work, 1)
    ds, dport = start_datasette(db)
    ds_params = "_size=1000&_shape=objects&_nocount=1&_nofacet=1&_nosuggest=1"

    def datasette_case(port, prefix=()):
        return {
            "start": f"http://127.0.0.1:{port}/northwind-s1/Order~20Details.json?{ds_params}",
            "records_key": "rows",
            "config": f'''[[source]]\nkind = "rest"\nurl = "http://127.0.0.1:{port}"\n[[source.table]]\nname = "order_details"\n'''
                      '''path = "/northwind-s1/Order~20Details.json"\n'''
                      '''params = { _size = 1000, _shape = "objects", _nocount = 1, _nofacet = 1, _nosuggest = 1 }\n'''
                      '''records = "/rows"\npaginate = "link"\n''',
            "prefix": prefix,
        }
    cases = [
        (f"json-server, {n:,} events", json_server_case(jport)),
        ("Datasette 0.65.5 as REST, Order Details (587,830 rows)", datasette_case(dport)),
    ]
    cases = [c for c, key in zip(cases, ["json-server", "datasette"]) if key in wanted]
    # The same Datasette case with the server and the client each on a core of its own.
    own = None
    if "datasette" in wanted and shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        own, own_port = start_datasette(db, prefix=("taskset", "-c", "0"))
        cases.append(("Datasette 0.65.5 as REST, own cores", datasette_case(own_port, ("taskset", "-c", "1"))))
    try:
        for case, spec in cases:
            for rep in range(a.reps):
                for tool in REST_TOOLS:  # interleaved
                    shutil.rmtree(out, ignore_errors=True)
                    secs, mib = timed([*spec.get("prefix", ()), *rest_cmd(tool, spec, work, out)])
                    results.setdefault((case, tool), []).append((secs, mib))
                    print(f"  rest-suite {case[:24]:24} {tool:15} rep {rep + 1}: {secs:6.2f}s {mib:7.1f} MiB", file=sys.stderr)
    finally:
        if js:
            js.terminate()
        ds.terminate()
        if own:
            own.terminate()
    with_js = any(c.startswith("json-server") for c, _ in cases)
    small = n // 3
    if with_js:  # memory as the record count grows: one more run with a third of the events
        js, jport = start_json_server(work, small)
        try:
            shutil.rmtree(out, ignore_errors=True)
            rss_small = timed(rest_cmd("harvest", json_server_case(jport), work, out))
        finally:
            js.terminate()
            shutil.rmtree(out, ignore_errors=True)
    print(f"\nREST benchmark, {a.reps} reps, {datetime.date.today()} (`scripts/bench --suite rest --reps {a.reps}`)\n")
    print("| case | tool | median wall s | × floor (rust) | × floor (rust), paired | peak RSS MiB (max) |")
    print("|---|---|---:|---:|---:|---:|")
    for case, _ in cases:
        floor = statistics.median(x for x, _ in results[(case, "floor (rust)")])
        for tool in REST_TOOLS:
            med = statistics.median(x for x, _ in results[(case, tool)])
            paired = statistics.median(t / f for (t, _), (f, _) in
                                       zip(results[(case, tool)], results[(case, "floor (rust)")]))
            print(f"| {case} | {tool} | {med:.2f} | {med / floor:.2f} | {paired:.2f} | "
                  f"{max(m for _, m in results[(case, tool)]):.0f} |")
    if rss_small:
        big = max(m for _, m in results[(cases[0][0], "harvest")])
        print(f"\nharvest peak RSS on json-server: {rss_small[1]:.0f} MiB with {small:,} events, {big:.0f} MiB with {n:,}.")


def timed(cmd):
    """Run cmd under /usr/bin/time; return (seconds, peak RSS MiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", tf.name] + cmd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.exit(f"benchmark command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
        secs, kb = tf.read().split()[-2:]
        return float(secs), int(kb) / 1024


def tool_cmd(tool, db, sql, params, out):
    if tool == "floor":
        return [FLOOR, db, sql] + [f"{k}={'int:' if isinstance(v, int) else ''}{v}" for k, v in params.items()]
    if tool == "harvest":
        cmd = [HARVEST, "-q", "sql-extract", "--db", db, "--query", sql, "--output", out]
        for k, v in params.items():
            cmd += ["--param", f"{k}={'int:' if isinstance(v, int) else ''}{v}"]
        return cmd
    script = PANDAS if tool == "pandas" else DUCKDB
    return [sys.executable, "-c", script, db, sql, json.dumps(params), out]


def wait_ready(proc, url, tries, what):
    """`proc` once `url` answers (tries every 0.2 s); stop the run if it never does."""
    import time, urllib.request
    for _ in range(tries):
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    sys.exit(f"{what} did not start")


def start_datasette(db, bindir=None, prefix=()):
    """A Datasette 0.65.5 (default settings) on a free loopback port; returns (process, port).
    `bindir`: the venv bin directory to run it from (default: this interpreter's); `prefix`:
    a command to run it under (e.g. `taskset -c 0`)."""
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    bindir = bindir or os.path.dirname(sys.executable)
    ds = subprocess.Popen([*prefix, os.path.join(bindir, "datasette"), "serve", db, "-h", "127.0.0.1",
                           "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_ready(ds, f"http://127.0.0.1:{port}/-/versions.json", 150, f"Datasette on {db}"), port


def fixture(work, scale):
    db = os.path.abspath(os.path.join(work, f"northwind-s{scale}.db"))
    if not os.path.exists(db):
        print(f"generating {db} ...", file=sys.stderr)
        subprocess.run([sys.executable, os.path.join(ROOT, "fixtures/generate.py"), "--out", db, "--scale", str(scale)], check=True)
    return db


HARVEST_TOOLS = ["floor (rust)", "floor (python)", "harvest", "harvest --type (all columns)", "harvest --parallel 3",
                 "harvest --table-format delta", "harvest --part-rows 20000",
                 "harvest --part-rows 20000 --table-format delta", "peer A"]
# Every column's type, so that harvest runs no type probe (the probe scans the whole table).
TYPES_GIVEN = ["--type", "OrderID=integer", "--type", "ProductID=integer", "--type", "UnitPrice=float",
               "--type", "Quantity=integer", "--type", "Discount=float"]


def harvest_cmd(tool, base, dbname, out):
    table = "Order~20Details"
    if tool == "floor (rust)":
        return [HTTP_FLOOR_RS, f"{base}/{dbname}/{table}.json", "1000"]
    if tool == "floor (python)":
        return [sys.executable, "-c", HTTP_FLOOR, f"{base}/{dbname}", table]
    if tool == "peer A":
        return [sys.executable, "-c", PEER_A, f"{base}/{dbname}", table, out]
    cmd = [HARVEST, "-q", "harvest", "--url", base, "--db", dbname, "--table", "Order Details", "--out", out]
    # The tool's name is harvest's command line: its flags are passed as written.
    if tool.endswith("--type (all columns)"):
        return cmd + TYPES_GIVEN
    return cmd + tool.split()[1:]


def compression_suite(a, work):
    """harvest with and without compression against Datasette + datasette-gzip behind a
    delayed, bandwidth-capped proxy."""
    import shutil
    db = fixture(work, 1)
    ds, port = start_datasette(db, os.path.join(work, "venv-gzip", "bin"))
    proxy = subprocess.Popen([DELAY_PROXY, str(port), str(a.delay_ms), str(a.mbit)], stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{int(proxy.stdout.readline())}"
    out = os.path.join(work, "c-out")
    tools = {"harvest (gzip, br, zstd)": [], "harvest --no-compression": ["--no-compression"]}
    results = {}
    try:
        for rep in range(a.reps):
            for tool, extra in tools.items():
                shutil.rmtree(out, ignore_errors=True)
                secs, mib = timed(harvest_cmd("harvest", base, "northwind-s1", out) + extra)
                end = [json.loads(l) for l in open(os.path.join(out, "manifest.jsonl"))][-1]
                wire, body = end["totals"]["wire_bytes"], end["totals"]["bytes"]
                results.setdefault(tool, []).append((secs, wire, body))
                print(f"  compression {tool:26} rep {rep + 1}: {secs:6.2f}s wire {wire / 1e6:7.1f} MB", file=sys.stderr)
    finally:
        proxy.terminate()
        ds.terminate()
        shutil.rmtree(out, ignore_errors=True)
    print(f"\ncompression benchmark: Order Details, scale 1, Datasette 0.65.5 + datasette-gzip behind "
          f"+{a.delay_ms} ms per request and {a.mbit:g} Mbit/s, {a.reps} reps, {datetime.date.today()} "
          f"(`scripts/bench --suite compression --reps {a.reps}`)\n")
    print("| tool | median wall s | MB on the wire | MB of JSON (snapshots) | wall ÷ uncompressed |")
    print("|---|---:|---:|---:|---:|")
    plain = statistics.median(x for x, _, _ in results["harvest --no-compression"])
    for tool in tools:
        med = statistics.median(x for x, _, _ in results[tool])
        wire = statistics.median(w for _, w, _ in results[tool])
        body = statistics.median(b for _, _, b in results[tool])
        print(f"| {tool} | {med:.2f} | {wire / 1e6:.1f} | {body / 1e6:.1f} | {med / plain:.2f} |")


def harvest_suite(a, work):
    """Harvest throughput against a local Datasette 0.65.5 on the scale-1 fixture, direct and
    through a proxy that delays each request by 20 ms (a server across a network); then peak RSS
    of harvest on the scale-10 fixture."""
    import shutil
    db = fixture(work, 1)
    ds, port = start_datasette(db)
    proxy = subprocess.Popen([DELAY_PROXY, str(port), str(a.delay_ms)], stdout=subprocess.PIPE, text=True)
    proxy_port = int(proxy.stdout.readline())
    cases = [("local", f"http://127.0.0.1:{port}", ()),
             (f"+{a.delay_ms} ms per request", f"http://127.0.0.1:{proxy_port}", ())]
    if a.local_only:
        cases = cases[:1]
    # The same local server, with the server and the client each on a core of its own (as on
    # two machines): on a 2-core machine the client's work otherwise competes with the
    # server's threads for the same cores.
    own = None
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        own, own_port = start_datasette(db, prefix=("taskset", "-c", "0"))
        cases.append(("local, own cores", f"http://127.0.0.1:{own_port}", ("taskset", "-c", "1")))
    tools_run = [t for t in HARVEST_TOOLS if t in a.harvest_tools.split(",")]
    out = os.path.join(work, "h-out")
    results = {}
    try:
        for case, base, prefix in cases:
            for rep in range(a.reps):
                for tool in tools_run:  # interleaved, so drift on a shared machine hits every tool alike
                    shutil.rmtree(out, ignore_errors=True)
                    secs, mib = timed([*prefix, *harvest_cmd(tool, base, "northwind-s1", out)])
                    results.setdefault((case, tool), []).append((secs, mib))
                    print(f"  harvest-suite {case:22} {tool:22} rep {rep + 1}: {secs:6.2f}s {mib:7.1f} MiB", file=sys.stderr)
    finally:
        proxy.terminate()
        ds.terminate()
        if own:
            own.terminate()
    rss10 = {}
    if a.scale10_rss:
        db10 = fixture(work, 10)
        ds, port = start_datasette(db10)
        try:
            for tool in ["harvest", "harvest --parallel 3", "harvest --table-format delta"]:
                shutil.rmtree(out, ignore_errors=True)
                rss10[tool] = timed(harvest_cmd(tool, f"http://127.0.0.1:{port}", "northwind-s10", out))
                print(f"  harvest-suite scale 10 {tool:22}: {rss10[tool][0]:6.2f}s {rss10[tool][1]:7.1f} MiB", file=sys.stderr)
        finally:
            ds.terminate()
    shutil.rmtree(out, ignore_errors=True)
    print(f"\nharvest benchmark: Order Details, scale 1 (587,830 rows, 588 pages of 1000), local Datasette 0.65.5 "
          f"(default settings), {a.reps} reps, {datetime.date.today()} "
          f"(`scripts/bench --suite harvest --reps {a.reps}`)\n")
    print("| case | tool | median wall s | × floor (rust) | × floor (rust), paired | × floor (python) | harvest ÷ tool | peak RSS MiB (max) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for case, _, _ in cases:
        med = {t: statistics.median(x for x, _ in results[(case, t)]) for t in tools_run}
        med.setdefault("floor (python)", float("nan"))
        for tool in tools_run:
            # Paired: each rep's time over the same rep's floor, then the median. Reps run
            # interleaved, so this cancels drift of the shared machine across the run.
            paired = statistics.median(t / f for (t, _), (f, _) in
                                       zip(results[(case, tool)], results[(case, "floor (rust)")]))
            print(f"| {case} | {tool} | {med[tool]:.2f} | {med[tool] / med['floor (rust)']:.2f} | {paired:.2f} | "
                  f"{med[tool] / med['floor (python)']:.2f} | {med['harvest'] / med[tool]:.2f} | "
                  f"{max(m for _, m in results[(case, tool)]):.0f} |")
    if rss10:
        print("\nscale 10 (5,909,926 rows, 5,910 pages), one run each:\n")
        print("| tool | wall s | peak RSS MiB |")
        print("|---|---:|---:|")
        for tool, (secs, mib) in rss10.items():
            print(f"| {tool} | {secs:.1f} | {mib:.0f} |")


CHECKS_TOML = """
[[source]]
name = "nw"
url = "{base}"
database = "{db}"
page_size = 1000

[[source.table]]
name = "{table}"
{checks}
"""

ORDER_DETAILS_CHECKS = """
[source.table.checks]
required = ["OrderID", "ProductID", "Quantity"]
range = { UnitPrice = { min = 0 }, Discount = { min = 0, max = 1 } }
unique = ["OrderID", "ProductID"]
"""


def keys_db(work, n):
    """A table of `n` rows with an integer key, for the `unique` memory case."""
    import sqlite3
    db = os.path.abspath(os.path.join(work, f"keys-{n}.db"))
    if not os.path.exists(db):
        print(f"generating {db} ...", file=sys.stderr)
        tmp = db + ".tmp"
        if os.path.exists(tmp):
            os.remove(tmp)
        c = sqlite3.connect(tmp)
        c.execute("create table keys (id INTEGER PRIMARY KEY, v INTEGER)")
        c.execute(f"with recursive k(i) as (select 1 union all select i + 1 from k where i < {n}) "
                  "insert into keys select i, i % 97 from k")
        c.commit()
        c.close()
        os.rename(tmp, db)
    return db


def checks_suite(a, work):
    """Row checks on Order Details (required on 3 columns, range on 2, unique on the key)
    against the same harvest without checks, interleaved; then `unique` over many keys, for
    peak RSS."""
    import shutil
    db = fixture(work, 1)
    out = os.path.join(work, "k-out")
    cfgs = {}
    for name, checks in [("harvest", ""), ("harvest + checks", ORDER_DETAILS_CHECKS)]:
        cfgs[name] = os.path.join(work, f"checks-{len(cfgs)}.toml")
    cases = []
    ds, port = start_datasette(db)
    own = None
    cases.append(("local, shared cores", port, ()))
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        own, own_port = start_datasette(db, prefix=("taskset", "-c", "0"))
        cases.append(("local, own cores", own_port, ("taskset", "-c", "1")))
    results = {}
    try:
        for case, p, prefix in cases:
            for (name, checks), cfg in zip([("harvest", ""), ("harvest + checks", ORDER_DETAILS_CHECKS)], cfgs.values()):
                with open(cfg, "w") as f:
                    f.write(CHECKS_TOML.format(base=f"http://127.0.0.1:{p}", db="northwind-s1",
                                               table="Order Details", checks=checks))
            for rep in range(a.reps):
                for name, cfg in cfgs.items():  # interleaved
                    shutil.rmtree(out, ignore_errors=True)
                    secs, mib = timed([*prefix, HARVEST, "-q", "harvest", "-c", cfg, "--out", out])
                    results.setdefault((case, name), []).append((secs, mib))
                    print(f"  checks-suite {case:20} {name:18} rep {rep + 1}: {secs:6.2f}s {mib:7.1f} MiB", file=sys.stderr)
                    if name != "harvest":
                        end = [json.loads(l) for l in open(os.path.join(out, "manifest.jsonl"))
                               if '"table_end"' in l][-1]
                        assert end["rows"] == 587830 and end["rows_quarantined"] == 0, end
    finally:
        ds.terminate()
        if own:
            own.terminate()
    print(f"\nchecks benchmark: Order Details, scale 1 (587,830 rows), local Datasette 0.65.5, "
          f"{a.reps} reps, {datetime.date.today()} (`scripts/bench --suite checks --reps {a.reps}`)\n")
    print("| case | tool | median wall s | ÷ without checks, paired median | peak RSS MiB (max) |")
    print("|---|---|---:|---:|---:|")
    for case, _, _ in cases:
        base = results[(case, "harvest")]
        for name in cfgs:
            r = results[(case, name)]
            paired = statistics.median(t / b for (t, _), (b, _) in zip(r, base))
            print(f"| {case} | {name} | {statistics.median(x for x, _ in r):.2f} | {paired:.3f} | "
                  f"{max(m for _, m in r):.0f} |")
    if a.unique_keys:
        kdb = keys_db(work, a.unique_keys)
        ds, port = start_datasette(kdb)
        rss = {}
        try:
            for name, checks in [("harvest", ""), ("harvest, unique = [\"id\"]", '[source.table.checks]\nunique = ["id"]\n')]:
                cfg = os.path.join(work, "checks-keys.toml")
                with open(cfg, "w") as f:
                    f.write(CHECKS_TOML.format(base=f"http://127.0.0.1:{port}", db=f"keys-{a.unique_keys}",
                                               table="keys", checks=checks))
                shutil.rmtree(out, ignore_errors=True)
                rss[name] = timed([HARVEST, "-q", "harvest", "-c", cfg, "--out", out])
                print(f"  checks-suite {a.unique_keys:,} keys {name}: {rss[name][0]:6.2f}s {rss[name][1]:7.1f} MiB", file=sys.stderr)
                if checks:
                    idx = os.path.join(out, "state", "unique", "keys.sqlite")
                    rss[name] += (os.path.getsize(idx) / 2**20,)
        finally:
            ds.terminate()
        print(f"\n`unique` over {a.unique_keys:,} keys (a table of {a.unique_keys:,} rows, one run each):\n")
        print("| tool | wall s | peak RSS MiB | key index on disk MiB |")
        print("|---|---:|---:|---:|")
        for name, v in rss.items():
            print(f"| {name} | {v[0]:.1f} | {v[1]:.0f} | {v[2]:.0f} |" if len(v) > 2 else f"| {name} | {v[0]:.1f} | {v[1]:.0f} | – |")
    shutil.rmtree(out, ignore_errors=True)


def shard_suite(a, work):
    """One big table harvested by one process, and by three `--shard I/3` processes at once,
    against three Datasette processes behind a round-robin proxy."""
    import shutil, time
    db = fixture(work, a.shard_scale)
    name = os.path.splitext(os.path.basename(db))[0]
    servers = [start_datasette(db) for _ in range(3)]
    proxy = subprocess.Popen([DELAY_PROXY, ",".join(str(p) for _, p in servers), "0"],
                             stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{int(proxy.stdout.readline())}"
    outs = [os.path.join(work, f"shard-out-{k}") for k in (1, 2, 3)]
    cmd = [HARVEST, "-q", "harvest", "--url", base, "--db", name, "--table", "Order Details"]
    tools = ["one process", "one process --parallel 6", "3 shards --parallel 6",
             "3 writers --parallel 6, one Delta DIR"]
    lake = os.path.join(work, "shard-lake")
    results = {}
    try:
        for rep in range(a.reps):
            for tool in tools:  # interleaved, so drift on a shared machine hits every tool alike
                for o in outs + [lake]:
                    shutil.rmtree(o, ignore_errors=True)
                if tool.startswith("3 "):
                    writers = tool.startswith("3 writers")
                    started = time.monotonic()
                    with tempfile.TemporaryDirectory() as tmp:
                        procs = []
                        for k, o in enumerate(outs, 1):
                            tf = os.path.join(tmp, f"{k}.time")
                            where = ["--out", lake, "--table-format", "delta", "--writer", f"shard-{k}"] \
                                if writers else ["--out", o]
                            procs.append((tf, subprocess.Popen(
                                ["/usr/bin/time", "-f", "%e %M", "-o", tf] + cmd + where +
                                ["--parallel", "6", "--shard", f"{k}/3"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
                        per = []
                        for tf, p in procs:
                            _, err = p.communicate()
                            if p.returncode != 0:
                                sys.exit(f"a shard failed ({p.returncode}):\n{err[-2000:]}")
                            secs, kb = open(tf).read().split()[-2:]
                            per.append((float(secs), int(kb) / 1024))
                    secs = time.monotonic() - started
                    mib = max(m for _, m in per)
                    detail = " ".join(f"{s:.1f}s/{m:.0f}MiB" for s, m in per)
                else:
                    extra = ["--parallel", "6"] if "--parallel" in tool else []
                    secs, mib = timed(cmd + ["--out", outs[0]] + extra)
                    detail = ""
                manifests = [os.path.join(o, "manifest.jsonl") for o in outs] + \
                    glob.glob(os.path.join(lake, "writers", "*", "manifest.jsonl"))
                rows = sum(json.loads(l)["rows"] for m in manifests if os.path.exists(m)
                           for l in open(m) if '"kind":"table_end"' in l)
                results.setdefault(tool, []).append((secs, mib))
                print(f"  shard-suite {tool:26} rep {rep + 1}: {secs:6.2f}s {mib:7.1f} MiB {rows:,} rows {detail}",
                      file=sys.stderr)
    finally:
        proxy.terminate()
        for ds, _ in servers:
            ds.terminate()
        for o in outs + [lake]:
            shutil.rmtree(o, ignore_errors=True)
    print(f"\nshard benchmark: Order Details, scale {a.shard_scale}, three Datasette 0.65.5 processes behind a "
          f"round-robin proxy, {os.cpu_count()} cores, {a.reps} reps, {datetime.date.today()} "
          f"(`scripts/bench --suite shard --reps {a.reps}`)\n")
    print("| tool | median wall s | one process ÷ tool | peak RSS MiB per process (max) |")
    print("|---|---:|---:|---:|")
    one = statistics.median(x for x, _ in results["one process"])
    for tool in tools:
        med = statistics.median(x for x, _ in results[tool])
        print(f"| {tool} | {med:.2f} | {one / med:.2f} | {max(m for _, m in results[tool]):.0f} |")


def s3_suite(a, work):
    """The same harvest into a local DIR and into an S3 prefix on a loopback moto server."""
    import shutil, socket, urllib.request
    db = fixture(work, 1)
    name = os.path.splitext(os.path.basename(db))[0]
    ds, port = start_datasette(db)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s3port = s.getsockname()[1]; s.close()
    moto = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                             "-p", str(s3port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(moto, f"http://127.0.0.1:{s3port}/moto-api/", 150, "moto")
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s3port}/bench", method="PUT"))
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3port}")
    cmd = [HARVEST, "-q", "harvest", "--url", f"http://127.0.0.1:{port}", "--db", name,
           "--table", "Order Details", "--part-rows", "100000"]
    tools = ["local DIR, parquet", "s3 (moto), parquet", "local DIR, delta", "s3 (moto), delta"]
    out, stage = os.path.join(work, "s3-out"), os.path.join(work, "s3-stage")
    results = {}
    old_env = dict(os.environ)
    os.environ.update(env)
    try:
        for rep in range(a.reps):
            for i, tool in enumerate(tools):  # interleaved
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(stage, ignore_errors=True)
                where = ["--out", f"s3://bench/r{rep}-{i}", "--stage", stage] if tool.startswith("s3") \
                    else ["--out", out]
                fmt = ["--table-format", "delta"] if tool.endswith("delta") else []
                secs, mib = timed(cmd + where + fmt)
                results.setdefault(tool, []).append((secs, mib))
                print(f"  s3-suite {tool:20} rep {rep + 1}: {secs:6.2f}s {mib:7.1f} MiB", file=sys.stderr)
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        moto.terminate()
        ds.terminate()
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)
    print(f"\ns3 benchmark: Order Details, scale 1, Datasette 0.65.5 and moto 5.2.5 on loopback, "
          f"{os.cpu_count()} cores, {a.reps} reps, {datetime.date.today()} (`scripts/bench --suite s3 --reps {a.reps}`)\n")
    print("| output | median wall s | ÷ local DIR of the same format | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    for tool in tools:
        med = statistics.median(x for x, _ in results[tool])
        local = statistics.median(x for x, _ in results["local DIR, " + tool.split(", ")[1]])
        print(f"| {tool} | {med:.2f} | {med / local:.2f} | {max(m for _, m in results[tool]):.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="all", choices=["all", "sql-extract", "harvest", "compression", "rest", "rows", "export", "shard", "s3", "checks", "latency"])
    ap.add_argument("--latency-ms", default="50", help="latency suite: added latency per request, ms (comma-separated list)")
    ap.add_argument("--latency-records", type=int, default=200_000, help="latency suite: events served by json-server")
    ap.add_argument("--latency-ids", type=int, default=5_000, help="latency suite: ids of the row-driven case")
    ap.add_argument("--latency-slow-reps", type=int, default=1,
                    help="latency suite: repetitions of the sequential tools (minutes each)")
    ap.add_argument("--unique-keys", type=int, default=10_000_000,
                    help="checks suite: rows (keys) of the `unique` memory case; 0 skips it")
    ap.add_argument("--rows-inputs", type=int, default=20_000, help="rows suite: input rows (requests) per run")
    ap.add_argument("--rows-rss", default="100000,300000,1000000",
                    help="rows suite: input counts for the peak-RSS runs (comma-separated; empty to skip)")
    ap.add_argument("--rest-records", type=int, default=300_000, help="rest suite: events served by json-server")
    ap.add_argument("--rest-cases", default="json-server,datasette", help="rest suite: which cases to run")
    ap.add_argument("--harvest-tools", default=",".join(HARVEST_TOOLS),
                    help="harvest suite: which of the tools to run (comma-separated; must include 'floor (rust)' and 'harvest')")
    ap.add_argument("--shard-scale", type=int, default=10, help="shard suite: fixture scale")
    ap.add_argument("--local-only", action="store_true", help="harvest suite: skip the delayed case")
    ap.add_argument("--mbit", type=float, default=50, help="compression suite: bandwidth cap of the proxy")
    ap.add_argument("--work", default=".bench")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--tools", default="floor,harvest,duckdb,pandas")
    ap.add_argument("--delay-ms", type=int, default=20, help="harvest suite: per-request delay of the 'remote' case")
    ap.add_argument("--no-scale10-rss", dest="scale10_rss", action="store_false",
                    help="harvest suite: skip the scale-10 peak-RSS runs")
    a = ap.parse_args()
    if a.suite in ("all", "harvest"):
        harvest_suite(a, a.work)
    if a.suite in ("all", "compression"):
        compression_suite(a, a.work)
    if a.suite in ("all", "rest"):
        rest_suite(a, a.work)
    if a.suite in ("all", "rows"):
        rows_suite(a, a.work)
    if a.suite in ("all", "export"):
        export_suite(a, a.work)
    if a.suite in ("all", "shard"):
        shard_suite(a, a.work)
    if a.suite in ("all", "s3"):
        s3_suite(a, a.work)
    if a.suite in ("all", "checks"):
        checks_suite(a, a.work)
    if a.suite in ("all", "latency"):
        from latency import latency_suite
        latency_suite(a, a.work, sys.modules[__name__])
    if a.suite in ("harvest", "compression", "rest", "rows", "export", "shard", "s3", "checks", "latency"):
        return
    db = fixture(a.work, a.scale)
    tools = a.tools.split(",")
    results = {}
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        for case, sql, params in CASES:
            for rep in range(a.reps):
                for tool in tools:  # interleaved, so drift on a shared machine hits every tool alike
                    out = os.path.join(tmp, f"{tool}.parquet")
                    secs, mib = timed(tool_cmd(tool, db, sql, params, out))
                    results.setdefault((case, tool), []).append((secs, mib))
                    print(f"  {case:14} {tool:8} rep {rep + 1}: {secs:6.2f}s {mib:7.1f} MiB", file=sys.stderr)
                    if os.path.exists(out):
                        os.remove(out)
    print(f"\nsql-extract benchmark, scale {a.scale}, {a.reps} reps, {datetime.date.today()} "
          f"(`scripts/bench --reps {a.reps} --scale {a.scale}`)\n")
    print("| case | tool | median wall s | × floor | harvest ÷ tool | peak RSS MiB (max) |")
    print("|---|---|---:|---:|---:|---:|")
    for case, _, _ in CASES:
        floor = statistics.median(s for s, _ in results[(case, "floor")]) if "floor" in tools else None
        h = statistics.median(s for s, _ in results[(case, "harvest")]) if "harvest" in tools else None
        for tool in tools:
            med = statistics.median(s for s, _ in results[(case, tool)])
            rss = max(m for _, m in results[(case, tool)])
            xf = f"{med / floor:.2f}" if floor else "–"
            ratio = f"{h / med:.2f}" if h else "–"
            print(f"| {case} | {tool} | {med:.2f} | {xf} | {ratio} | {rss:.0f} |")


if __name__ == "__main__":
    main()
