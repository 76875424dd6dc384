#!/usr/bin/env python3
"""A/B of two harvest binaries on the REST benchmark's json-server case: the same events
(fixtures/generate_rest.py), 1000 a page by Link headers, each binary run REPS times
interleaved, json-server and the client pinned to a core each (taskset) as two machines would
be. Prints each binary's median wall time, client CPU time (user + system: what the client's
own work costs, whatever the server's pace) and peak RSS, and the ratios B/A. Use it to check that
a change costs nothing where its options are unused.

usage: bench/ab_rest.py A_BINARY B_BINARY [--records N] [--reps N] [--json-server PATH]
                       [--shared-cores]
  (json-server 0.17.4: default the test harness's copy under target/harvest-test-cache,
   else .bench's from scripts/bench)
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def json_server(path_arg):
    for p in [path_arg,
              os.path.join(ROOT, "target/harvest-test-cache/npm-json-server-0.17.4/node_modules/.bin/json-server"),
              os.path.join(ROOT, ".bench/npm-json-server/node_modules/.bin/json-server")]:
        if p and os.path.exists(p):
            return p
    sys.exit("no json-server 0.17.4: run scripts/test or scripts/bench once (they install it), or pass --json-server")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json-server")
    ap.add_argument("--shared-cores", action="store_true",
                    help="do not pin: server and client share the machine's cores")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="harvest-ab-")
    db = os.path.join(work, "events.json")
    subprocess.run([sys.executable, os.path.join(ROOT, "fixtures/generate_rest.py"), "--out", db,
                    "--records", str(a.records)], check=True)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    pin = not a.shared_cores and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    server = (["taskset", "-c", "0"] if pin else []) + [
        json_server(a.json_server), db, "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    js = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/events?_limit=1", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        config = os.path.join(work, "ab.toml")
        with open(config, "w") as f:
            f.write(f'[[source]]\nkind = "rest"\nurl = "http://127.0.0.1:{port}"\n'
                    '[[source.table]]\nname = "events"\nparams = { _page = 1, _limit = 1000 }\npaginate = "link"\n')
        runs = {"A": [], "B": []}
        for rep in range(a.reps):
            for name, binary in (("A", a.a), ("B", a.b)):
                out = os.path.join(work, "out")
                shutil.rmtree(out, ignore_errors=True)
                cmd = (["taskset", "-c", "1"] if pin else []) + [
                    binary, "-q", "harvest", "--config", config, "--out", out, "--no-compression"]
                # Each run's own peak RSS, from wait4.
                t = time.perf_counter()
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                _, status, usage = os.wait4(p.pid, 0)
                secs = time.perf_counter() - t
                if status != 0:
                    sys.exit(f"{name} failed (status {status})")
                cpu = usage.ru_utime + usage.ru_stime
                runs[name].append((secs, usage.ru_maxrss / 1024, cpu))
                print(f"  rep {rep + 1} {name}: {secs:6.2f}s wall {cpu:6.2f}s cpu {usage.ru_maxrss / 1024:7.1f} MiB",
                      file=sys.stderr)
    finally:
        js.terminate()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    rss = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r[2] for r in v) for k, v in runs.items()}
    print(f"\nREST A/B, json-server, {a.records:,} events, {a.reps} reps"
          f"{', server and client on a core each' if pin else ', shared cores'}")
    for k, path in (("A", a.a), ("B", a.b)):
        print(f"{k} {path}: median {med[k]:.2f}s wall, {cpu[k]:.2f}s client CPU, peak RSS {rss[k]:.0f} MiB")
    print(f"B/A wall {med['B'] / med['A']:.3f}, client CPU {cpu['B'] / cpu['A']:.3f}, RSS {rss['B'] / rss['A']:.3f}")


main()
