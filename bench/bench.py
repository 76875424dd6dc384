"""Benchmark driver: runs harvest and its peers on the same input, several times each, in one
run, and prints a Markdown table of medians, ratios and peak RSS. Invoked by scripts/bench.

sql-extract cases (issue: "sql-extract ... fast and in bounded memory"):
  floor   - target/release/examples/sqlite_floor: steps every row, reads every value, writes nothing
  harvest - harvest sql-extract --output FILE.parquet (zstd)
  pandas  - read_sql_query(chunksize=25000) -> pyarrow.ParquetWriter (zstd)
  duckdb  - DuckDB 1.4.4 + sqlite extension: COPY (query over sqlite_scan) TO parquet (zstd)
harvest cases ("Order Details" of the scale-1 fixture, page size 1000, local Datasette 0.65.5):
  floor   - a minimal client that only follows `next` with the same query parameters, keeping nothing
  harvest - harvest harvest --table "Order Details" into a fresh DIR
  peer A  - requests session, sequential _next pagination, a JSON snapshot + manifest line per page,
            rows accumulated into a pandas DataFrame and written to Parquet at the end
Wall time and peak RSS come from /usr/bin/time; the machine is shared, so medians matter.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, glob, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARVEST = os.path.join(ROOT, "target/release/harvest")
FLOOR = os.path.join(ROOT, "target/release/examples/sqlite_floor")

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
params = {"_size": "1000", "_nocount": "1", "_nofacet": "1", "_nosuggest": "1"}
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


def harvest_suite(a, work):
    """Harvest throughput against a local Datasette 0.65.5 on the scale-1 fixture."""
    import shutil, socket, time, urllib.request
    db = os.path.abspath(os.path.join(work, "northwind-s1.db"))
    if not os.path.exists(db):
        subprocess.run([sys.executable, os.path.join(ROOT, "fixtures/generate.py"), "--out", db, "--scale", "1"], check=True)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    ds = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "datasette"), "serve", db, "-h", "127.0.0.1",
                           "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/-/versions.json", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        dbname = "northwind-s1"
        table = "Order~20Details"
        results = {}
        for rep in range(a.reps):
            for tool in ["floor", "harvest", "peer A"]:
                out = os.path.join(work, "h-out")
                shutil.rmtree(out, ignore_errors=True)
                if tool == "floor":
                    cmd = [sys.executable, "-c", HTTP_FLOOR, f"{base}/{dbname}", table]
                elif tool == "harvest":
                    cmd = [HARVEST, "-q", "harvest", "--url", base, "--db", dbname, "--table", "Order Details", "--out", out]
                else:
                    cmd = [sys.executable, "-c", PEER_A, f"{base}/{dbname}", table, out]
                secs, mib = timed(cmd)
                results.setdefault(tool, []).append((secs, mib))
                print(f"  harvest-suite {tool:8} rep {rep + 1}: {secs:6.2f}s {mib:7.1f} MiB", file=sys.stderr)
        shutil.rmtree(os.path.join(work, "h-out"), ignore_errors=True)
    finally:
        ds.terminate()
    print(f"\nharvest benchmark: Order Details, scale 1 (587,830 rows, 588 pages of 1000), local Datasette 0.65.5, "
          f"{a.reps} reps, {datetime.date.today()} (`scripts/bench --suite harvest --reps {a.reps}`)\n")
    print("| tool | median wall s | × floor | harvest ÷ tool | peak RSS MiB (max) |")
    print("|---|---:|---:|---:|---:|")
    floor = statistics.median(x for x, _ in results["floor"])
    h = statistics.median(x for x, _ in results["harvest"])
    for tool in ["floor", "harvest", "peer A"]:
        med = statistics.median(x for x, _ in results[tool])
        print(f"| {tool} | {med:.2f} | {med / floor:.2f} | {h / med:.2f} | {max(m for _, m in results[tool]):.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="all", choices=["all", "sql-extract", "harvest"])
    ap.add_argument("--work", default=".bench")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--tools", default="floor,harvest,duckdb,pandas")
    a = ap.parse_args()
    if a.suite in ("all", "harvest"):
        harvest_suite(a, a.work)
    if a.suite == "harvest":
        return
    db = os.path.abspath(os.path.join(a.work, f"northwind-s{a.scale}.db"))
    if not os.path.exists(db):
        print(f"generating {db} ...", file=sys.stderr)
        subprocess.run([sys.executable, os.path.join(ROOT, "fixtures/generate.py"), "--out", db, "--scale", str(a.scale)], check=True)
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
