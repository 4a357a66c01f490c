#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: repeatable where `bench/run`'s
rates are not (a shared machine moves them by ±15% from run to run; the instruction count of
the same binary and request moves by well under 1%).

Starts BINARY under callgrind with `bench/run`'s settings, prepares `bench/run`'s acquire
request (a 10-grant cookie and one new grant) or renewal, sends it 20 times, zeroes the
counters, sends it N times on one keep-alive connection, and prints the instructions counted
(every thread: hyper, tokio, capsign) divided by N. `--observe` turns on the JSON access log
and the metrics, as `bench/run --observe` does. Compare two builds in one sitting.

Usage: bench/icount.py [--observe] [--renewal] [-n N] BINARY
"""

import argparse
import glob
import http.client
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench/bench.py: the request and the settings)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--observe", action="store_true", help="access log (JSON) and metrics on")
    ap.add_argument("--renewal", action="store_true", help="the renewal instead of the acquire")
    ap.add_argument("-n", type=int, default=1000, help="requests counted (default 1000)")
    args = ap.parse_args()
    _, bearer = bench.setup("capsign-icount-")
    env = bench.capsign_env()
    if args.observe:
        env.update(RUST_LOG="info", CAPSIGN_LOG_FORMAT="json", CAPSIGN_METRICS_LISTEN="127.0.0.1:0")
    out = os.path.join(tempfile.mkdtemp(prefix="capsign-icount-"), "callgrind.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", args.binary],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            m = re.search(r"listening on http://[\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise SystemExit("icount: capsign did not start under valgrind (is valgrind installed?)")
        drain = subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
        path, headers, _ = bench.prepare_capsign_request(port, bearer)["renewal" if args.renewal else "acquire"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def send(n):
            for _ in range(n):
                conn.request("GET", path, headers=headers)
                res = conn.getresponse()
                res.read()
                if res.status != 200:
                    raise SystemExit(f"icount: answered {res.status}")

        send(20)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        send(args.n)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    total = 0
    for f in glob.glob(out + ".*"):
        with open(f) as dump:
            for line in dump:
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
    kind = "renewal" if args.renewal else "acquire"
    mode = ", access log and metrics on" if args.observe else ""
    print(f"{args.binary} ({kind}{mode}): {total / args.n:,.0f} instructions per request")


if __name__ == "__main__":
    main()
