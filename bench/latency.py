"""The latency suite (`scripts/bench --suite latency`): servers on loopback behind
examples/delay_proxy, which holds every request for `--latency-ms` (default 50; a list such as
50,150 runs each) before passing it on, as a server that far away would be. Three cases:

(a) Datasette 0.65.5, the Northwind job: the scale-1 fixture's 7 tables plus 6 small ones added
    to a copy of it (Employees, Region, Shippers, Suppliers, Territories, EmployeeTerritories),
    13 tables, harvested with `--table` × 13:
      harvest                          - one table after another, one page after another
      harvest --jobs 4                 - four tables at once
      harvest --jobs 4 --parallel 8    - and each keyed table with 8 key-range cursors
(b) json-server 0.17.4, 200,000 generated events (`--latency-records`), paged by offset
    (`_start`/`_limit`, 100 per page) with its X-Total-Count header:
      harvest                          - paginate offset with total_header, one page at a time
      harvest parallel = 8             - the same with 8 pages fetched at once
      dlt rest_api                     - dlt's rest_api source (offset paginator, resource
                                         parallelized = True), written as Parquet by its
                                         filesystem destination
(c) json-server, one GET /events/{id} per id for `--latency-ids` ids (default 5,000) from a
    SQLite table:
      harvest concurrency 8 / 32       - a `for_each` table
      dlt transformer                  - a dlt resource of the ids and a parallelized transformer
                                         fetching each one (dlt's thread pool, default workers)
(d) HTTP/2 against HTTP/1.1: Datasette 0.65.5 served over TLS by hypercorn (which offers h2
    in the TLS handshake; a certificate from a private CA made with trustme, trusted through
    SSL_CERT_FILE), Order Details with 8 key-range cursors, harvest as built (HTTP/2 by ALPN)
    against harvest --http1 (one keep-alive connection per cursor).
The sequential floor of each case is its round trips × the added latency: the least time any
client needs that sends one request after the other (the server's own time comes on top).
The sequential tools of (b) and (c) take minutes; they run `--latency-slow-reps` times
(default 1), the others `--reps` times, interleaved. Wall time and peak RSS from /usr/bin/time.
"""
import json, os, shutil, sqlite3, statistics, subprocess, sys, datetime

DLT_REST = r'''
import sys, dlt
from dlt.sources.rest_api import rest_api_source
base, out = sys.argv[1], sys.argv[2]
src = rest_api_source({
    "client": {"base_url": base,
               "paginator": {"type": "offset", "limit": 100, "offset_param": "_start",
                             "limit_param": "_limit", "total_path": None}},
    "resource_defaults": {"parallelized": True},
    "resources": [{"name": "events", "endpoint": {"path": "events", "data_selector": "$"}}],
})
p = dlt.pipeline(pipeline_name="latency_rest", destination=dlt.destinations.filesystem(bucket_url=out),
                 dataset_name="bench", pipelines_dir=out + "/.dlt")
p.run(src, loader_file_format="parquet")
'''

DLT_ROWS = r'''
import sys, sqlite3, dlt
from dlt.sources.helpers import requests
base, db, out = sys.argv[1], sys.argv[2], sys.argv[3]

@dlt.resource
def ids():
    for r in sqlite3.connect(db).execute("select id from ids"):
        yield {"id": r[0]}

@dlt.transformer(data_from=ids, parallelized=True)
def event(row):
    yield requests.get(f"{base}/events/{row['id']}").json()

p = dlt.pipeline(pipeline_name="latency_rows", destination=dlt.destinations.filesystem(bucket_url=out),
                 dataset_name="bench", pipelines_dir=out + "/.dlt")
p.run(event, loader_file_format="parquet")
'''

SMALL_TABLES = {
    "Employees": 9, "Region": 4, "Shippers": 3, "Suppliers": 29, "Territories": 53,
    "EmployeeTerritories": 49,
}


def northwind13(work, fixture):
    """The scale-1 fixture with the 6 small Northwind tables it lacks: 13 tables."""
    db = os.path.abspath(os.path.join(work, "northwind13.db"))
    if not os.path.exists(db):
        shutil.copy(fixture(work, 1), db + ".tmp")
        con = sqlite3.connect(db + ".tmp")
        for t, n in SMALL_TABLES.items():
            con.execute(f'create table "{t}" (id integer primary key, name text, note text)')
            con.executemany(f'insert into "{t}" values (?, ?, ?)',
                            ((i, f"{t} {i}", "x" * (i % 40)) for i in range(1, n + 1)))
        con.commit(); con.close()
        os.replace(db + ".tmp", db)
    return db


def tables_of(db):
    con = sqlite3.connect(db)
    names = [r[0] for r in con.execute(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name")]
    con.close()
    return names


def manifest_end(out):
    with open(os.path.join(out, "manifest.jsonl")) as f:
        return [json.loads(l) for l in f if '"run_end"' in l][-1]


H2_APP = """
import os
from datasette.app import Datasette
app = Datasette([os.environ["H2_DB"]]).app()
"""


def start_h2_datasette(work, db):
    """Datasette behind hypercorn on TLS (h2 offered by ALPN); (process, port, cert) or None."""
    import socket, time, urllib.request, ssl
    hyper = os.path.join(os.path.dirname(sys.executable), "hypercorn")
    if not os.path.exists(hyper):
        print("no hypercorn: the HTTP/2 case is skipped", file=sys.stderr)
        return None
    d = os.path.abspath(os.path.join(work, "h2"))
    os.makedirs(d, exist_ok=True)
    # A private CA and a certificate for 127.0.0.1 it signed (trustme); SSL_CERT_FILE names the CA.
    import trustme
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_pem = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"), os.path.join(d, "ca.pem")
    ca.cert_pem.write_to_path(ca_pem)
    leaf.private_key_pem.write_to_path(key)
    with open(cert, "wb") as f:
        for pem in leaf.cert_chain_pems:
            f.write(pem.bytes())
    with open(os.path.join(d, "h2app.py"), "w") as f:
        f.write(H2_APP)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, H2_DB=db, PYTHONPATH=d)
    p = subprocess.Popen([hyper, "--certfile", cert, "--keyfile", key, "-b", f"127.0.0.1:{port}", "h2app:app"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context(cafile=ca_pem)
    for _ in range(150):
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/-/versions.json", timeout=1, context=ctx)
            return p, port, ca_pem
        except OSError:
            time.sleep(0.2)
    p.terminate()
    sys.exit("hypercorn did not start")


def latency_suite(a, work, h):
    """`h`: bench.py's helpers (HARVEST, DELAY_PROXY, timed, start_datasette, fixture,
    start_json_server, ids_db)."""
    dlt_py = os.path.join(work, "venv-dlt", "bin", "python")
    have_dlt = os.path.exists(dlt_py)
    if not have_dlt:
        print("no dlt venv (scripts/bench makes .bench/venv-dlt): dlt rows are skipped", file=sys.stderr)
    db = northwind13(work, h.fixture)
    tables = tables_of(db)
    ds, ds_port = h.start_datasette(db)
    js, js_port = h.start_json_server(work, a.latency_records)
    ids = h.ids_db(work, a.latency_ids)
    h2 = start_h2_datasette(work, db)
    if h2:
        # The private CA is what every harvest run of the suite trusts (only case (d) is HTTPS).
        os.environ["SSL_CERT_FILE"] = h2[2]
    out = os.path.abspath(os.path.join(work, "lat-out"))
    cfg_dir = os.path.abspath(os.path.join(work, "lat-config"))
    os.makedirs(cfg_dir, exist_ok=True)
    results, rows_seen = {}, {}
    lat_list = [int(x) for x in a.latency_ms.split(",") if x]
    try:
        for ms in lat_list:
            proxies = {}
            ports = [("ds", ds_port), ("js", js_port)] + ([("h2", h2[1])] if h2 else [])
            for name, port in ports:
                p = subprocess.Popen([h.DELAY_PROXY, str(port), str(ms)], stdout=subprocess.PIPE, text=True)
                proxies[name] = (p, f"http://127.0.0.1:{int(p.stdout.readline())}")
            ds_url, js_url = proxies["ds"][1], proxies["js"][1]

            def rest_config(parallel):
                path = os.path.join(cfg_dir, f"rest-{parallel}.toml")
                with open(path, "w") as f:
                    f.write(f'[[source]]\nkind = "rest"\nurl = "{js_url}"\n[[source.table]]\nname = "events"\n'
                            f'parallel = {parallel}\n'
                            'paginate = { kind = "offset", offset_param = "_start", limit_param = "_limit", '
                            'limit = 100, total_header = "X-Total-Count" }\n')
                return path

            def rows_config(conc):
                path = os.path.join(cfg_dir, f"rows-{conc}.toml")
                with open(path, "w") as f:
                    f.write(f'[[source]]\nkind = "rest"\nurl = "{js_url}"\n[[source.table]]\nname = "event"\n'
                            f'path = "/events/{{id}}"\nfor_each = {{ sqlite = "{ids}", query = "select id from ids" }}\n'
                            f'concurrency = {conc}\n')
                return path

            job = [h.HARVEST, "-q", "harvest", "--url", ds_url, "--db", "northwind13", "--out", out]
            for t in tables:
                job += ["--table", t]
            cases = {
                "(a) Datasette, Northwind job (13 tables)": [
                    ("harvest", job, True, "rows"),
                    ("harvest --jobs 4", job + ["--jobs", "4"], False, "rows"),
                    ("harvest --jobs 4 --parallel 8", job + ["--jobs", "4", "--parallel", "8"], False, "rows"),
                ],
                f"(b) json-server, {a.latency_records:,} events by offset": [
                    ("harvest", [h.HARVEST, "-q", "harvest", "-c", rest_config(1), "--out", out], True, "rows"),
                    ("harvest parallel = 8", [h.HARVEST, "-q", "harvest", "-c", rest_config(8), "--out", out], False, "rows"),
                ] + ([("dlt rest_api (parallelized)", [dlt_py, "-c", DLT_REST, js_url, out], True, None)] if have_dlt else []),
                f"(c) json-server, one request per id, {a.latency_ids:,} ids": [
                    ("harvest concurrency 8", [h.HARVEST, "-q", "harvest", "-c", rows_config(8), "--out", out], False, "rows"),
                    ("harvest concurrency 32", [h.HARVEST, "-q", "harvest", "-c", rows_config(32), "--out", out], False, "rows"),
                ] + ([("dlt transformer (parallelized)", [dlt_py, "-c", DLT_ROWS, js_url, ids, out], True, None)] if have_dlt else []),
            }
            if h2:
                h2_cmd = [h.HARVEST, "-q", "harvest", "--url", "https://" + proxies["h2"][1].split("://")[1],
                          "--db", "northwind13", "--table", "Order Details", "--parallel", "8", "--out", out]
                cases["(d) Datasette over TLS (hypercorn), Order Details, --parallel 8"] = [
                    ("harvest (HTTP/2)", h2_cmd, False, "rows"),
                    ("harvest --http1", h2_cmd + ["--http1"], False, "rows"),
                ]
            for case, tools in cases.items():
                for rep in range(a.reps):
                    for tool, cmd, slow, _ in tools:  # interleaved
                        if slow and rep >= a.latency_slow_reps:
                            continue
                        shutil.rmtree(out, ignore_errors=True)
                        secs, mib = h.timed(cmd)
                        if tool.startswith("harvest"):
                            end = manifest_end(out)
                            rows_seen[(ms, case, tool)] = end["totals"]["rows"]
                            # Round trips of a one-at-a-time client: the pages (one request per id).
                            if tool in ("harvest", "harvest (HTTP/2)"):
                                results.setdefault((ms, case, "round trips"), []).append(end["totals"]["pages"])
                            if tool.endswith("concurrency 8"):
                                results.setdefault((ms, case, "round trips"), []).append(a.latency_ids)
                        results.setdefault((ms, case, tool), []).append((secs, mib))
                        print(f"  latency +{ms} ms {case[:28]:28} {tool:32} rep {rep + 1}: {secs:7.2f}s {mib:7.1f} MiB",
                              file=sys.stderr)
            for p, _ in proxies.values():
                p.terminate()
    finally:
        ds.terminate()
        js.terminate()
        if h2:
            h2[0].terminate()
        shutil.rmtree(out, ignore_errors=True)
    print(f"\nlatency benchmark, {a.reps} reps ({a.latency_slow_reps} of the sequential tools), "
          f"{datetime.date.today()} (`scripts/bench --suite latency --latency-ms {a.latency_ms} --reps {a.reps}`)\n")
    print("| added latency | case | tool | median wall s | × sequential floor | floor ÷ tool | peak RSS MiB (max) | rows |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for ms in lat_list:
        for case in [c for (m, c, t) in results if m == ms and t == "round trips"]:
            trips = statistics.median(results[(ms, case, "round trips")])
            floor = trips * ms / 1000
            print(f"| {ms} ms | {case} | sequential floor ({trips:,.0f} round trips × {ms} ms) | {floor:.2f} | 1.00 | 1.00 | | |")
            for (m, c, tool), r in results.items():
                if m != ms or c != case or tool == "round trips":
                    continue
                med = statistics.median(x for x, _ in r)
                rows = rows_seen.get((ms, case, tool), "")
                print(f"| {ms} ms | {case} | {tool} | {med:.2f} | {med / floor:.2f} | {floor / med:.1f} | "
                      f"{max(x for _, x in r):.0f} | {rows if rows == '' else f'{rows:,}'} |")
