#!/usr/bin/env python3
"""Where capsign's time goes under the benchmark's load. Run it with `bench/profile`.

It builds capsign, starts it pinned to core 0 with the benchmark's configuration, prepares one of
the benchmark's requests (`--request acquire`: 10 held grants, one new; `renewal`: nothing new),
drives it with wrk on core 1 (64 connections)
while `perf record` samples the server, and prints: the user and system CPU time per request
(from /proc, so it needs no perf), then the functions with the most samples, inclusive of what
they call, and the share of user space and kernel. Nothing here talks to anything but 127.0.0.1.

`--server wire` or `--server crypto` profiles that request's wire or crypto floor instead (the
hello-world answering capsign's own answer, without or with capsign's cryptography; see
bench/run), pinned the same way: the floors' CPU per request next to capsign's splits the gap
between them into user space and kernel. `--server crypto --spin-us N` adds N µs of busy work
per request to the crypto floor: what N µs of a server's own work costs in throughput, kernel
time included (a slower server leaves the load generator idle more often, and waking it costs
the server kernel time).

`--server lean` profiles the lean floor (examples/floors/lean.rs): the request answered by the
least work that still does it for real, on the request's own bytes (session JWT checked and
read, capability parameter read, cookie opened and decoded, the new grant decided by prefix,
merged, the Ably JWT written and signed, the cookie sealed), without capsign's checks and
generality. Its answer is checked as capsign's is (a JWT that verifies, the same grants).

`--count` counts system calls and context switches per request (perf stat) instead.

For a call tree, open the recording it leaves: `perf report -i target/bench-profile.data`.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


COUNTED = ",".join([
    "raw_syscalls:sys_enter", "syscalls:sys_enter_writev", "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_futex", "context-switches",
    "cpu-migrations",
])


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def ensure_perf():
    if shutil.which("perf"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        bench.run(["apt-get", "install", "-y", "-qq", "linux-perf"], stdout=subprocess.DEVNULL)
    return shutil.which("perf") is not None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5, help="seconds of load (default 5)")
    ap.add_argument("--top", type=int, default=40, help="functions to list (default 40)")
    ap.add_argument("--request", choices=["acquire", "renewal"], default="acquire",
                    help="which of the benchmark's requests (default acquire)")
    ap.add_argument("--observe", action="store_true",
                    help="with metrics and JSON access logs on, as bench/run --observe runs them")
    ap.add_argument("--server", choices=["capsign", "wire", "crypto", "lean"],
                    default="capsign",
                    help="profile capsign (default), or the request's wire, crypto or lean floor")
    ap.add_argument("--spin-us", type=float, default=0.0,
                    help="with --server crypto: add this many µs of busy work per request, "
                         "a stand-in for a server's own work (what would N µs of it cost?)")
    ap.add_argument("--count", action="store_true",
                    help="count system calls and context switches per request (perf stat) "
                         "instead of sampling functions")
    args = ap.parse_args()
    if not 1 <= args.seconds <= 60:
        raise SystemExit("profile: keep --seconds between 1 and 60")
    if args.spin_us and args.server != "crypto":
        raise SystemExit("profile: --spin-us goes with --server crypto")
    if not 0 <= args.spin_us <= 1000:
        raise SystemExit("profile: keep --spin-us between 0 and 1000")

    bench.ensure_wrk()
    bench.run(["cargo", "build", "--release", "--locked", "--bin", "capsign", "--example", "hello"],
              cwd=bench.ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(bench.ROOT, "target"))
    capsign_bin = os.path.join(target, "release", "capsign")
    hello_bin = os.path.join(target, "release", "examples", "hello")
    data = os.path.join(target, "bench-profile.data")

    tmp, bearer = bench.setup("capsign-profile-")

    env = bench.capsign_env()
    if args.observe:
        env.update(RUST_LOG="info", CAPSIGN_LOG_FORMAT="json", CAPSIGN_METRICS_LISTEN="127.0.0.1:0")
    server = capsign = bench.Server("capsign", [capsign_bin], env, "0")
    try:
        path, headers, answer = bench.prepare_capsign_request(capsign.port, bearer)[args.request]
        if args.server != "capsign":
            answer_path = os.path.join(tmp, "floor.json")
            if args.spin_us:
                answer = dict(answer, work=dict(answer["work"], spin_ns=int(args.spin_us * 1000)))
            floor = {k: v for k, v in answer.items() if args.server == "crypto" or k != "work"}
            if args.server == "lean":
                floor["lean"] = bench.lean_config(answer, headers)
            with open(answer_path, "w") as f:
                json.dump(floor, f)
            server = bench.Server(args.server, [hello_bin, "127.0.0.1:0", answer_path],
                                  dict(os.environ), "0")
            if args.server == "lean":
                bench.check_lean(server.port, path, headers, answer)
            else:
                bench.check_floor(server.port, path, headers, answer)
        bench.wrk(server.port, path, headers, 64, 1, "1")  # warm-up
        perf = None
        if ensure_perf():
            if args.count:
                perf = subprocess.Popen(
                    ["perf", "stat", "-x", ",", "-o", data + ".count", "-e", COUNTED,
                     "-p", str(server.proc.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            else:
                perf = subprocess.Popen(
                    ["perf", "record", "-F", "1999", "-g", "--call-graph", "dwarf,16384",
                     "-o", data, "-p", str(server.proc.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            time.sleep(0.5)
        else:
            bench.log("profile: perf is not available; CPU times only")
        u0, s0 = cpu_ticks(server.proc.pid)
        result = bench.wrk(server.port, path, headers, 64, args.seconds, "1")
        u1, s1 = cpu_ticks(server.proc.pid)
        if perf:
            perf.send_signal(2)
            perf.wait(timeout=60)
    finally:
        server.stop()
        capsign.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    n = result["rps"] * args.seconds
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    print(f"\n{result['rps']:,.0f} rps, p99 {bench.fmt_ms(result['p99'])}; per request: "
          f"user {(u1 - u0) * tick_us / n:.1f} µs, system {(s1 - s0) * tick_us / n:.1f} µs")
    if not perf:
        return
    if args.count:
        # perf counted from before the measured load to after it; the warm-up is not in it, but
        # the half second of idle before is (an idle server makes no calls worth counting).
        print("\nper request (perf stat over the load):")
        for line in open(data + ".count"):
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[0].replace(".", "").isdigit():
                print(f"  {float(fields[0]) / n:8.3f}  {fields[2]}")
        return
    report = lambda *extra: subprocess.run(  # noqa: E731
        ["perf", "report", "-i", data, "--stdio", "-g", "none", "--percent-limit", "0.5", *extra],
        capture_output=True, text=True, timeout=600,
    ).stdout
    print("\nshare of samples:")
    for line in report("--no-children", "--sort", "dso").splitlines():
        if "%" in line and not line.lstrip().startswith("#"):
            print("  " + line.strip())
    print(f"\ntop {args.top} functions, inclusive (children counted in their callers):")
    shown = 0
    for line in report("--children", "--sort", "symbol").splitlines():
        if "%" not in line or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        while parts and parts[-1] == "-":
            parts.pop()
        print(f"  {parts[0]:>7} {parts[2]} {' '.join(parts[3:])[:110]}")
        shown += 1
        if shown >= args.top:
            break
    print(f"\nrecording: {data}")


if __name__ == "__main__":
    main()
