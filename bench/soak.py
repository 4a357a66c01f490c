#!/usr/bin/env python3
"""capsign's soak run: the /auth flow of bench/run (HS256 session, 10-grant cookie, one new
grant, Ably JWT, new cookie) at full load on 127.0.0.1 for a set time, from one release build.

Prints the errors (non-2xx answers, socket errors), the latency percentiles, and the resident
memory at the start, along the way, and at the end. Run it with `bench/soak [--minutes N]`.
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10, help="length of the run (default 10)")
    ap.add_argument("--conns", type=int, default=64, help="connections (default 64)")
    args = ap.parse_args()
    if not 0 < args.minutes <= 120:
        raise SystemExit("soak: --minutes must be in (0, 120]")
    bench.ensure_wrk()
    bench.run(["cargo", "build", "--release", "--locked", "--bin", "capsign"], cwd=bench.ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(bench.ROOT, "target"))
    tmp, bearer = bench.setup("capsign-soak-")
    server = bench.Server("capsign", [os.path.join(target, "release", "capsign")], bench.capsign_env())
    try:
        path, headers, _ = bench.prepare_capsign_request(server.port, bearer)
        start_rss = rss_kib(server.proc.pid)
        samples = []
        stop = threading.Event()

        def sample():
            t0 = time.monotonic()
            while not stop.wait(10):
                samples.append((time.monotonic() - t0, rss_kib(server.proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        seconds = int(args.minutes * 60)
        bench.log(f"soak: {seconds} s at {args.conns} connections; RSS at start {start_rss / 1024:.1f} MiB")
        argv = ["wrk", "-t2", f"-c{args.conns}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
        for k, v in headers.items():
            argv += ["-H", f"{k}: {v}"]
        argv.append(f"http://127.0.0.1:{server.port}{path}")
        out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=seconds + 120).stdout
        stop.set()
        end_rss = rss_kib(server.proc.pid)
        peak = rss_kib(server.proc.pid, "VmHWM")
        # After the load: the server still answers correctly.
        bench.prepare_capsign_request(server.port, bearer)
    finally:
        server.stop()

    total = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    pcts = re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)
    print(f"capsign soak: {args.minutes:g} min, {args.conns} connections, {os.cpu_count()} cores")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
    print(f"requests: {total.group(1)} in {total.group(2)}; rps {rps}")
    print(f"errors: {non2xx.group(1) if non2xx else 0} non-2xx; socket: {sock.group(1) if sock else 'none'}")
    print("latency: " + ", ".join(f"p{p} {v}" for p, v in pcts))
    print(f"RSS: start {start_rss / 1024:.1f} MiB, end {end_rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB")
    if samples:
        print("RSS along the way (s: MiB): " + ", ".join(f"{t:.0f}: {r / 1024:.1f}" for t, r in samples[:: max(1, len(samples) // 12)]))
    if non2xx or sock:
        raise SystemExit("soak: errors during the run")


if __name__ == "__main__":
    main()
