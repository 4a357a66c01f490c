#!/usr/bin/env python3
"""capsign's end-to-end benchmark. Run it with `bench/run` (which passes its arguments here).

It builds capsign and a hyper hello-world from the same lockfile, optionally installs the
Express + jsonwebtoken stack of Ably's JWT tutorial, and drives each with wrk on 127.0.0.1,
alternating the servers (A B A B ...), pinned (server on core 0, wrk on core 1) and unpinned,
at 1 and 64 connections. capsign is measured on two requests, both from a client holding 10
grants in its cookie: **renewal** (asks again for a grant it holds: nothing new, nothing
resealed; the request users send most) and **acquire** (one new grant, decided by the rules,
the cookie resealed). Before measuring, it checks both answers (a valid Ably JWT covering the
set; a new cookie for the acquire, none for the renewal).

For each request it also runs a "wire floor": the hello-world binary answering capsign's own
answer (same headers, same body) to capsign's own request, so the table separates what
capsign's bytes cost in the kernel and hyper from what capsign's work costs; and a "crypto
floor": the same, plus per request the HMAC-SHA256s and base64 (de)codings that request needs,
at their sizes (renewal: the session JWT, the cookie in, the Ably JWT; acquire: those and the
cookie out), so the table shows the best any server doing that cryptography and nothing else
reaches; and a "lean floor" (examples/floors/lean.rs): the same request answered for real by
the least work that does it (the cryptography on the request's own bytes, its JSON read, the
grants decoded, decided by prefix, merged and written, the cookie sealed), without capsign's
checks and generality, so the table shows what the request's essential work costs when done
plainly with capsign's crates (`--no-floor` leaves the floors out). It ends with the performance targets' table.

It prints requests per second, p50/p99 latency, the ratios, cold start to first 200, and the
peak resident memory of each server. Nothing here talks to anything but 127.0.0.1.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABLY_KEY_NAME = "bench1.keyone"
ABLY_SECRET = "bench-secret-" + secrets.token_hex(16)
SESSION_SECRET = secrets.token_hex(32)
COOKIE_NAME = "__Host-capsign"
RULES = """
[[rule]]
resource = "doc:*"
ops = ["subscribe", "publish", "presence", "history"]
"""
# Mixed op sets, as real documents get: readers, writers, presence.
OP_SETS = [
    ["subscribe"],
    ["subscribe", "history"],
    ["publish", "subscribe"],
    ["presence", "publish", "subscribe"],
]
HELD = 10


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hs256(claims, secret, header=None):
    header = header or {"alg": "HS256", "typ": "JWT"}
    # Compact, as PyJWT and Node's jsonwebtoken write them.
    compact = {"separators": (",", ":")}
    signing = (b64url(json.dumps(header, **compact).encode()) + "."
               + b64url(json.dumps(claims, **compact).encode()))
    mac = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(mac)


def verify_ably_jwt(token):
    """Checks the JWT's MAC with the Ably secret independently; returns its claims."""
    head, body, sig = token.split(".")
    want = hmac.new(ABLY_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(want, b64url_decode(sig)):
        raise SystemExit("bench: capsign's JWT does not verify with the Ably key secret")
    header = json.loads(b64url_decode(head))
    if header.get("kid") != ABLY_KEY_NAME or header.get("alg") != "HS256":
        raise SystemExit(f"bench: unexpected JWT header {header}")
    return json.loads(b64url_decode(body))


def run(cmd, **kw):
    log("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def ensure_wrk():
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise SystemExit("bench: wrk is missing; install it (apt-get install wrk) or run as root")
    run(["apt-get", "install", "-y", "-qq", "wrk"], stdout=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, headers, timeout=5.0):
    """One HTTP/1.1 request on a fresh connection; returns (status, headers list, body)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    status = int(head_lines[0].split()[1])
    hdrs = [tuple(x.split(": ", 1)) for x in head_lines[1:] if ": " in x]
    return status, hdrs, body


class Server:
    """A server process; `cores` pins it with taskset."""

    def __init__(self, name, argv, env, cores=None, listen_re=r"listening on http://([\d.]+):(\d+)"):
        self.name = name
        full = (["taskset", "-c", cores] if cores else []) + argv
        self.proc = subprocess.Popen(
            full, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        self.port = None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            m = re.search(listen_re, line)
            if m:
                self.port = int(m.group(2))
                break
        if self.port is None:
            self.stop()
            raise SystemExit(f"bench: {name} did not start")
        # Keep draining stderr so the server never blocks on a full pipe.
        self._drain = subprocess.Popen(
            ["cat"], stdin=self.proc.stderr, stdout=subprocess.DEVNULL
        )

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def parse_duration(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]
    return float(m.group(1)) * scale


def wrk(port, path, headers, conns, seconds, cores):
    argv = (["taskset", "-c", cores] if cores else []) + [
        "wrk",
        "-t1" if cores or conns < 2 else "-t2",
        f"-c{conns}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": parse_duration(pct.get("50", "nan")),
        "p99": parse_duration(pct.get("99", "nan")),
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errs.group(1) if errs else "",
    }


def setup(prefix):
    """A temporary directory with the benchmark's rules file (which `capsign_env` points
    capsign at) and a day-long session JWT for the benchmark's user: `(tmp, bearer)`."""
    global RULES_PATH
    tmp = tempfile.mkdtemp(prefix=prefix)
    RULES_PATH = os.path.join(tmp, "rules.toml")
    with open(RULES_PATH, "w") as f:
        f.write(RULES)
    now = int(time.time())
    return tmp, hs256({"sub": "bench-user", "iat": now, "exp": now + 86400}, SESSION_SECRET)


def capsign_env(port=0):
    env = dict(os.environ)
    env.update(
        {
            "ABLY_API_KEY": f"{ABLY_KEY_NAME}:{ABLY_SECRET}",
            "CAPSIGN_LISTEN": f"127.0.0.1:{port}",
            "CAPSIGN_COOKIE_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "CAPSIGN_SESSION_SECRET": SESSION_SECRET,
            "CAPSIGN_RULES": RULES_PATH,
            "RUST_LOG": "warn",
            # Stopped between runs: no load balancer to wait for.
            "CAPSIGN_SHUTDOWN_DELAY": "0s",
        }
    )
    return env


def capability_query(grants):
    cap = json.dumps(grants, separators=(",", ":"))
    return "/auth?capability=" + urllib.parse.quote(cap, safe="")


def prepare_capsign_request(port, bearer):
    """Acquires HELD grants one request at a time, then builds the two measured requests:
    **acquire** (the 10-grant cookie plus one new grant: the answer is a credential for all 11
    and a new cookie) and **renewal** (the same cookie asking again for a grant it holds: a
    credential for the 10 and nothing resealed, no Set-Cookie, no X-Capsign-Grants). Checks
    both answers; returns `{kind: (path, headers, answer)}`."""
    cookie = None
    held = {}
    for i in range(HELD):
        res = f"doc:{secrets.token_hex(4)}"
        held[res] = OP_SETS[i % len(OP_SETS)]
        headers = {"Authorization": f"Bearer {bearer}"}
        if cookie:
            headers["Cookie"] = cookie
        status, hdrs, body = http_get(port, capability_query({res: held[res]}), headers)
        if status != 200:
            raise SystemExit(f"bench: acquiring grant {i} failed: {status} {body[:200]!r}")
        sc = [v for k, v in hdrs if k.lower() == "set-cookie"]
        cookie = sc[0].split(";", 1)[0]
    new = {f"doc:{secrets.token_hex(4)}": ["publish", "subscribe"]}
    headers = {"Authorization": f"Bearer {bearer}", "Cookie": cookie}
    path = capability_query(new)
    status, hdrs, body = http_get(port, path, headers)
    ctype = dict((k.lower(), v) for k, v in hdrs).get("content-type")
    if status != 200 or ctype != "application/jwt":
        raise SystemExit(f"bench: measured request answered {status} {ctype}: {body[:200]!r}")
    claims = verify_ably_jwt(body.decode())
    cap = json.loads(claims["x-ably-capability"])
    want = dict(held, **new)
    for res, ops in want.items():
        if sorted(cap.get(res, [])) != sorted(ops):
            raise SystemExit(f"bench: credential lacks {res}: {cap}")
    if claims.get("x-ably-clientId") != "bench-user":
        raise SystemExit(f"bench: wrong clientId in {claims}")
    if not any(k.lower() == "set-cookie" for k, _ in hdrs):
        raise SystemExit("bench: no new cookie set")
    if any(k.lower() == "x-capsign-grants" for k, _ in hdrs):
        raise SystemExit("bench: a cookie client was sent X-Capsign-Grants")
    log(f"bench: acquire answer checked: JWT verifies, {len(cap)} grants, cookie {len(cookie)} bytes")
    # The answer as the wire floor replays it; hyper writes its own framing headers.
    framing = {"connection", "content-length", "date", "transfer-encoding"}
    acquire = {
        "headers": [[k, v] for k, v in hdrs if k.lower() not in framing],
        "body": body.decode(),
        "work": crypto_work(bearer, cookie, body.decode(), cookie_out=sc_value(hdrs)),
    }
    # Renewal: a held grant asked again (ably-js renewing with its channel's capability).
    first = next(iter(held))
    renew_path = capability_query({first: held[first]})
    status, hdrs, body = http_get(port, renew_path, headers)
    if status != 200:
        raise SystemExit(f"bench: renewal answered {status}: {body[:200]!r}")
    cap = json.loads(verify_ably_jwt(body.decode())["x-ably-capability"])
    if sorted(cap) != sorted(held):
        raise SystemExit(f"bench: the renewal's credential holds {sorted(cap)}")
    if any(k.lower() in ("set-cookie", "x-capsign-grants") for k, _ in hdrs):
        raise SystemExit("bench: a renewal that asks nothing new was resealed")
    log(f"bench: renewal answer checked: JWT verifies, {len(cap)} grants, nothing resealed")
    renewal = {
        "headers": [[k, v] for k, v in hdrs if k.lower() not in framing],
        "body": body.decode(),
        "work": crypto_work(bearer, cookie, body.decode()),
    }
    return {"acquire": (path, headers, acquire), "renewal": (renew_path, headers, renewal)}


def sc_value(hdrs):
    """The `name=value` of the first Set-Cookie header."""
    return [v for k, v in hdrs if k.lower() == "set-cookie"][0].split(";", 1)[0]


# src/hs256.rs's USUAL_HEADERS: {"alg":"HS256","typ":"JWT"} and {"typ":"JWT","alg":"HS256"}.
USUAL_JWS_HEADERS = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9")


def crypto_work(bearer, cookie_in, jwt, cookie_out=None, header_out=None):
    """The sizes of the MACs and base64 (de)codings a measured request needs: the session JWT
    verified, the cookie opened, the Ably JWT signed, and what is sealed (the cookie for a
    cookie client's acquire; the X-Capsign-Grants header for a header client's; nothing for a
    renewal). The JWT header capsign writes is fixed: encoded once at start-up, and its whole
    SHA-256 blocks hashed once (the HMAC state after them is cloned per request), so only the
    rest of it counts. The session JWT's header is one of the usual few, which capsign knows
    by its encoding without decoding it (src/hs256.rs)."""
    def sealed(name, value):
        raw = b64url_decode(value)
        return len(b"capsign-grants-v1\0") + 2 + len(name) + len(raw) - 32, len(value), len(raw)

    in_mac, in_chars, _ = sealed(*cookie_in.split("=", 1))
    s_header, s_claims, s_sig = bearer.split(".")
    if s_header not in USUAL_JWS_HEADERS:
        raise SystemExit("bench: the session JWT's header is not one capsign knows by sight")
    j_header, j_claims, _ = jwt.split(".")
    j_prefix = len(j_header) + 1
    work = {
        "macs": [len(s_header) + 1 + len(s_claims), in_mac, j_prefix % 64 + len(j_claims)],
        "decode": [len(s_claims), len(s_sig), in_chars],
        "encode": [len(b64url_decode(j_claims)), 32],
    }
    for name, value in ((cookie_out or "=").split("=", 1), ("", header_out or "")):
        if value:
            mac, _, raw = sealed(name, value)
            work["macs"].append(mac)
            work["encode"].append(raw)
    return work


def check_hello(port):
    status, _, body = http_get(port, "/", {})
    if status != 200 or body != b"Hello, World!":
        raise SystemExit(f"bench: hello-world answered {status} {body!r}")


def check_floor(port, path, headers, answer):
    status, _, body = http_get(port, path, headers)
    if status != 200 or body.decode() != answer["body"]:
        raise SystemExit(f"bench: the wire floor answered {status} {body[:80]!r}")


def lean_config(answer, headers):
    """What the lean floor needs: the benchmark's secrets, the cookie's name (from the
    request's `Cookie`) and attributes (from capsign's `Set-Cookie`, when it set one), the
    credential's lifetime."""
    claims = verify_ably_jwt(answer["body"])
    name = headers["Cookie"].split("=", 1)[0]
    set_cookie = [v for k, v in answer["headers"] if k.lower() == "set-cookie"]
    attributes = set_cookie[0].partition(";")[2] if set_cookie else ""
    return {
        "session_secret": SESSION_SECRET,
        "ably_key": f"{ABLY_KEY_NAME}:{ABLY_SECRET}",
        "cookie_name": name,
        "cookie_attributes": ";" + attributes if attributes else "",
        "ttl_s": claims["exp"] - claims["iat"],
    }


def check_lean(port, path, headers, answer):
    """The lean floor's answer is a JWT that verifies with the Ably key and holds the grants
    capsign's does, with a cookie set when capsign set one."""
    status, hdrs, body = http_get(port, path, headers)
    if status != 200:
        raise SystemExit(f"bench: the lean floor answered {status}")
    got = json.loads(verify_ably_jwt(body.decode())["x-ably-capability"])
    want = json.loads(verify_ably_jwt(answer["body"])["x-ably-capability"])
    norm = lambda cap: {r: sorted(ops) for r, ops in cap.items()}  # noqa: E731
    if norm(got) != norm(want):
        raise SystemExit(f"bench: the lean floor granted {got}, capsign {want}")
    sets = lambda hs: any(k.lower() == "set-cookie" for k, _ in hs)  # noqa: E731
    if sets(hdrs) != sets(answer["headers"]):
        raise SystemExit("bench: the lean floor and capsign differ on setting the cookie")
    log(f"bench: lean floor's answer checked: JWT verifies, {len(got)} grants")


def check_express(port):
    status, _, body = http_get(port, "/auth", {})
    if status != 200:
        raise SystemExit(f"bench: express answered {status}")
    verify_ably_jwt(body.decode())


def fmt_ms(v):
    return f"{v:.2f} ms" if v >= 0.1 else f"{v * 1000:.0f} µs"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="A B rounds per setting (default 3: a median, not a mean, of two)")
    ap.add_argument("--no-express", action="store_true", help="skip the Express comparison")
    ap.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floors (wire, crypto and lean)",
    )
    ap.add_argument(
        "--observe",
        action="store_true",
        help="also run capsign with metrics (CAPSIGN_METRICS_LISTEN) and JSON access logs at info "
        "on, as 'observed', to measure what they cost next to capsign with both off",
    )
    ap.add_argument(
        "--baseline",
        metavar="BINARY",
        help="also run this capsign binary (an earlier build) on the same requests, alternating "
        "with this one, to compare two builds in one run",
    )
    ap.add_argument("--conns", default="1,64", help="connection counts (default 1,64)")
    ap.add_argument("--modes", default="pinned,unpinned", help="pinned and/or unpinned")
    args = ap.parse_args()
    if args.duration > 120 or args.rounds > 10:
        raise SystemExit("bench: keep --duration ≤ 120 and --rounds ≤ 10")

    ensure_wrk()
    run(["cargo", "build", "--release", "--locked", "--bin", "capsign", "--example", "hello"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    capsign_bin = os.path.join(target, "release", "capsign")
    hello_bin = os.path.join(target, "release", "examples", "hello")
    express_dir = os.path.join(ROOT, "bench", "express")
    use_express = not args.no_express and shutil.which("node") and shutil.which("npm")
    if use_express and not os.path.isdir(os.path.join(express_dir, "node_modules")):
        run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=express_dir)
    if not use_express and not args.no_express:
        log("bench: node/npm missing; skipping the Express comparison")

    use_floor = not args.no_floor
    tmp, bearer = setup("capsign-bench-")

    express_env = dict(os.environ, ABLY_API_KEY=f"{ABLY_KEY_NAME}:{ABLY_SECRET}")
    results = []  # (mode, conns, name, round, wrk result)
    peak = {}
    for mode in args.modes.split(","):
        server_cores, load_cores = ("0", "1") if mode == "pinned" else (None, None)
        cap_env = capsign_env()
        servers = {
            "hello": Server("hello", [hello_bin, "127.0.0.1:0"], dict(os.environ), server_cores),
            "capsign": Server("capsign", [capsign_bin], cap_env, server_cores),
        }
        if args.observe:
            # The same keys (so the same cookie opens), with metrics and an access log line per
            # request (JSON, to a pipe that is drained), as a production deployment runs.
            observed_env = dict(
                cap_env,
                RUST_LOG="info",
                CAPSIGN_LOG_FORMAT="json",
                CAPSIGN_METRICS_LISTEN="127.0.0.1:0",
            )
            servers["observed"] = Server("observed", [capsign_bin], observed_env, server_cores)
        if args.baseline:
            servers["baseline"] = Server("baseline", [args.baseline], cap_env, server_cores)
        if use_express:
            servers["express"] = Server(
                "express", ["node", os.path.join(express_dir, "server.js")], express_env, server_cores
            )
        try:
            check_hello(servers["hello"].port)
            requests = prepare_capsign_request(servers["capsign"].port, bearer)
            cap_path, cap_headers, _ = requests["acquire"]
            # Each measured run: (name, server, path, headers).
            runs = [("hello", "hello", "/", {})]
            for kind, (path, headers, answer) in requests.items():
                runs.append((f"capsign {kind}", "capsign", path, headers))
                if args.baseline:
                    runs.append((f"baseline {kind}", "baseline", path, headers))
                if not use_floor:
                    continue
                for floor in ("wire", "crypto", "lean"):
                    name = f"{floor} floor, {kind}"
                    answer_path = os.path.join(tmp, f"{floor}-{kind}.json")
                    spec = {k: v for k, v in answer.items() if floor == "crypto" or k != "work"}
                    if floor == "lean":
                        spec["lean"] = lean_config(answer, headers)
                    with open(answer_path, "w") as f:
                        json.dump(spec, f)
                    servers[name] = Server(
                        name, [hello_bin, "127.0.0.1:0", answer_path], dict(os.environ), server_cores
                    )
                    if floor == "lean":
                        check_lean(servers[name].port, path, headers, answer)
                    else:
                        check_floor(servers[name].port, path, headers, answer)
                    runs.append((name, name, path, headers))
                log(f"bench: crypto floor of a {kind}, per request: {answer['work']}")
            if args.observe:
                runs.append(("observed acquire", "observed", cap_path, cap_headers))
            if use_express:
                check_express(servers["express"].port)
                runs.append(("express", "express", cap_path, {"Authorization": f"Bearer {bearer}"}))
            for conns in [int(c) for c in args.conns.split(",")]:
                for _, server, path, headers in runs:  # warm-up, not recorded
                    wrk(servers[server].port, path, headers, conns, 1, load_cores)
                for rnd in range(args.rounds):
                    for name, server, path, headers in runs:
                        r = wrk(servers[server].port, path, headers, conns, args.duration, load_cores)
                        log(
                            f"bench: {mode:8} c={conns:<3} {name:8} round {rnd + 1}: "
                            f"{r['rps']:>9.0f} rps  p50 {fmt_ms(r['p50'])}  p99 {fmt_ms(r['p99'])}"
                        )
                        if r["non2xx"] or r["socket_errors"]:
                            raise SystemExit(
                                f"bench: {name} errors: {r['non2xx']} non-2xx; {r['socket_errors']}"
                            )
                        results.append((mode, conns, name, rnd, r))
            for name, srv in servers.items():
                peak[name] = max(peak.get(name, 0), srv.peak_rss_kib())
        finally:
            for srv in servers.values():
                srv.stop()

    cold = cold_starts(
        hello_bin, capsign_bin, express_dir if use_express else None, bearer, express_env
    )
    report(results, peak, cold, args)
    shutil.rmtree(tmp, ignore_errors=True)


def cold_starts(hello_bin, capsign_bin, express_dir, bearer, express_env):
    out = {}

    def timed(argv_for_port, env_for_port, path, headers, runs=5):
        samples = []
        for _ in range(runs):
            port = free_port()
            env = env_for_port(port)
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                argv_for_port(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                while True:
                    if time.perf_counter() - t0 > 10:
                        raise SystemExit("bench: no 200 within 10 s of starting")
                    try:
                        status, _, _ = http_get(port, path, headers, timeout=1)
                        if status == 200:
                            break
                        raise SystemExit(f"bench: cold start answered {status}")
                    except OSError:
                        time.sleep(0.0002)
                samples.append((time.perf_counter() - t0) * 1000)
            finally:
                proc.terminate()
                proc.wait()
        return statistics.median(samples)

    auth = {"Authorization": f"Bearer {bearer}"}
    cap_path = capability_query({"doc:cold": ["subscribe"]})
    out["hello"] = timed(lambda p: [hello_bin, f"127.0.0.1:{p}"], lambda p: dict(os.environ), "/", {})
    out["capsign"] = timed(lambda p: [capsign_bin], capsign_env, cap_path, auth)
    if express_dir:
        out["express"] = timed(
            lambda p: ["node", os.path.join(express_dir, "server.js")],
            lambda p: dict(express_env, PORT=str(p)),
            "/auth",
            {},
        )
    return out


ORDER = [
    "hello", "wire floor, renewal", "crypto floor, renewal", "lean floor, renewal",
    "capsign renewal", "baseline renewal", "wire floor, acquire", "crypto floor, acquire",
    "lean floor, acquire", "capsign acquire", "baseline acquire", "observed acquire", "express",
]


def report(results, peak, cold, args):
    def median_of(mode, conns, name, key):
        vals = [r[key] for m, c, n, _, r in results if (m, c, n) == (mode, conns, name)]
        return statistics.median(vals) if vals else float("nan")

    names = sorted({n for _, _, n, _, _ in results}, key=ORDER.index)
    print()
    print(f"capsign benchmark: {os.uname().machine}, {os.cpu_count()} cores, "
          f"{args.rounds} rounds × {args.duration} s per setting, medians")
    print()
    print("| setting | server | rps | p50 | p99 | / hello-world |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for mode in args.modes.split(","):
        for conns in [int(c) for c in args.conns.split(",")]:
            hello = median_of(mode, conns, "hello", "rps")
            for name in names:
                rps = median_of(mode, conns, name, "rps")
                print(
                    f"| {mode}, {conns} conn{'s' if conns > 1 else ''} | {name} | {rps:,.0f} | "
                    f"{fmt_ms(median_of(mode, conns, name, 'p50'))} | "
                    f"{fmt_ms(median_of(mode, conns, name, 'p99'))} | {rps / hello:.2f} |"
                )
    # The targets of the performance issue, for each setting measured.
    for mode in args.modes.split(","):
        for conns in [int(c) for c in args.conns.split(",")]:
            m = lambda name, key="rps": median_of(mode, conns, name, key)  # noqa: E731
            print()
            print(f"targets ({mode}, {conns} conn{'s' if conns > 1 else ''}; they are set for pinned, 64 conns):")
            print()
            print("| figure | target | this run |")
            print("| --- | --- | ---: |")
            print(f"| renewal rps / hello-world rps | ≥ 0.65 | {m('capsign renewal') / m('hello'):.2f} |")
            print(f"| renewal rps / its crypto floor rps | | {m('capsign renewal') / m('crypto floor, renewal'):.2f} |")
            print(f"| acquire rps / its crypto floor rps | ≥ 0.75 | {m('capsign acquire') / m('crypto floor, acquire'):.2f} |")
            print(f"| acquire rps / hello-world rps | | {m('capsign acquire') / m('hello'):.2f} |")
            if "lean floor, acquire" in names:
                print(f"| lean floor rps / crypto floor rps: acquire, renewal | (the request's essential work, none of capsign's checks) | "
                      f"{m('lean floor, acquire') / m('crypto floor, acquire'):.2f}, "
                      f"{m('lean floor, renewal') / m('crypto floor, renewal'):.2f} |")
                print(f"| capsign rps / lean floor rps: acquire, renewal | | "
                      f"{m('capsign acquire') / m('lean floor, acquire'):.2f}, "
                      f"{m('capsign renewal') / m('lean floor, renewal'):.2f} |")
            print(f"| p99, renewal / acquire | ≤ 2.5 ms on a quiet run | "
                  f"{fmt_ms(m('capsign renewal', 'p99'))} / {fmt_ms(m('capsign acquire', 'p99'))} |")
            if "baseline acquire" in names:
                print(f"| this build / --baseline: renewal, acquire | within 5% | "
                      f"{m('capsign renewal') / m('baseline renewal'):.3f}, "
                      f"{m('capsign acquire') / m('baseline acquire'):.3f} |")
            if "observed acquire" in names:
                obs, cap = m("observed acquire"), m("capsign acquire")
                print(f"| metrics and access logs on / off (acquire) | ≥ 0.95 | {obs / cap:.3f} |")
    print()
    print("Heap allocations per request: `cargo bench --bench allocations -- --check` (budget: renewal ≤ 12, acquire ≤ 16).")
    print()
    print("| server | cold start to first 200 | peak RSS under load |")
    print("| --- | ---: | ---: |")
    for name, server in (("hello", "hello"), ("capsign", "capsign"), ("express", "express")):
        if server not in peak:
            continue
        start = f"{cold[name]:.1f} ms" if name in cold else "(not measured)"
        print(f"| {name} | {start} | {peak.get(server, 0) / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
