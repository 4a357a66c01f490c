#!/usr/bin/env python3
"""The Cloudflare Worker measured next to the native server, in one run (bench/worker).

Both run the same settings and cookie key on 127.0.0.1: the release `capsign` binary, and
capsign-worker under workerd through scripts/worker-dev (built first). Reports the Worker's
size (the wasm module gzipped, as Cloudflare counts it against its 3 MB / 10 MB limits), the
time from start to the first `/healthz` answer for each (for the Worker this includes workerd
compiling the module and the isolate building the app), and the request rate of a renewal and
an acquire for each with wrk (the benchmark's 10-grant cookie, made by the native server and
opened by both). No target on the ratio: workerd runs one isolate on one thread here, while
the native server uses every core.

Usage: bench/worker [--duration S] [--rounds N] [--conns N]
"""

import argparse
import gzip
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench  # noqa: E402


def started(name, argv, env):
    t0 = time.monotonic()
    server = bench.Server(name, argv, env)
    return server, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, alternating (default 2)")
    ap.add_argument("--conns", type=int, default=16, help="wrk connections (default 16)")
    args = ap.parse_args()
    bench.ensure_wrk()
    bench.run(["cargo", "build", "--release", "--locked", "--bin", "capsign", "-q"], cwd=ROOT)
    bench.run([os.path.join(ROOT, "scripts", "worker-build")], cwd=ROOT)
    wasm = os.path.join(ROOT, "target", "worker", "capsign_worker_bg.wasm")
    with open(wasm, "rb") as f:
        raw = f.read()
    size = (len(raw), len(gzip.compress(raw, 9)))
    _, bearer = bench.setup("capsign-worker-bench-")
    env = bench.capsign_env(0)
    native, native_start = started("capsign", [os.path.join(ROOT, "target", "release", "capsign")], env)
    worker, worker_start = started("worker", [os.path.join(ROOT, "scripts", "worker-dev")], env)
    results = {}
    try:
        requests = bench.prepare_capsign_request(native.port, bearer)
        for kind, (path, headers, _) in requests.items():
            # The native server's cookie opens on the Worker: the same key, the same format.
            status, _, body = bench.http_get(worker.port, path, headers)
            if status != 200:
                raise SystemExit(f"bench: the Worker answered the {kind} {status}: {body[:200]!r}")
        for _ in range(args.rounds):
            for kind, (path, headers, _) in requests.items():
                for server in (native, worker):
                    r = bench.wrk(server.port, path, headers, args.conns, args.duration, None)
                    if r["non2xx"] or r["socket_errors"]:
                        raise SystemExit(f"bench: {server.name} {kind}: {r}")
                    results.setdefault((server.name, kind), []).append(r)
    finally:
        worker.stop()
        native.stop()

    def median(rs, key):
        values = sorted(r[key] for r in rs)
        return values[len(values) // 2]

    print()
    print(f"Worker size: {size[0]:,} bytes of wasm, {size[1]:,} gzipped "
          f"(Cloudflare: 3 MB free, 10 MB paid, compressed)")
    print(f"start to first /healthz 200: native {native_start * 1000:.0f} ms, "
          f"Worker under workerd {worker_start * 1000:.0f} ms")
    print(f"request rate, wrk -c{args.conns}, {args.duration} s, median of {args.rounds}:")
    print("| request | native req/s | Worker req/s | Worker / native | native p99 ms | Worker p99 ms |")
    print("|---|---|---|---|---|---|")
    for kind in ("renewal", "acquire"):
        n, w = results[("capsign", kind)], results[("worker", kind)]
        print(f"| {kind} | {median(n, 'rps'):,.0f} | {median(w, 'rps'):,.0f} | "
              f"{median(w, 'rps') / median(n, 'rps'):.2f} | {median(n, 'p99'):.2f} | {median(w, 'p99'):.2f} |")


if __name__ == "__main__":
    main()
