#!/usr/bin/env python3
"""Runs capsign's end-to-end suite (tests/e2e/run installs what it needs first).

Starts the fake Ably (fake_ably.py) and the real capsign binary on 127.0.0.1, then drives
them with ably-js on Node, ably-python, and ably-js in headless Chromium, and reports per SDK.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from fake_ably import FakeAbly  # noqa: E402

ABLY_KEY_NAME, ABLY_SECRET = "e2eApp.e2eKey", "e2e-ably-secret-" + secrets.token_hex(8)
DEMO_KEY_NAME, DEMO_SECRET = "demoap.demoky", "capsign-demo-secret-not-for-production"
# A key created with revocable tokens (Ably's revokeTokens works only for those).
REV_KEY_NAME, REV_SECRET = "e2eApp.revKey", "e2e-revocable-secret-" + secrets.token_hex(8)
SESSION_SECRET = secrets.token_hex(32)
STEP_TIMEOUT = 150


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def session(sub, lifetime=3600, **extra):
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": sub, "iat": now - max(0, -lifetime) - 60, "exp": now + lifetime, "role": "moderator",
              **extra}
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(SESSION_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


# How many checks each step's program reports; fewer is a failure.
EXPECTED = {"ably-js node": 21, "ably-python": 10, "ably-js chromium": 8, "metrics": 1, "deploy": 1,
            "helper node": 20, "helper examples": 1,
            "ably-js node, Lambda": 21, "ably-python, Lambda": 10,
            "ably-js node, Worker": 21, "ably-python, Worker": 10, "helper node, Worker": 20,
            "ably-js chromium, Worker": 8, "public keys, Worker": 5, "revocation": 3}


# What the steps measured (their `MEASURE ...` lines), repeated in the summary.
MEASURED = []

# Every process the suite starts, stopped (by PID) at its end, whatever failed on the way.
STARTED = []


def start_capsign(binary, env, want_metrics=False):
    """Starts capsign; returns the process and its URL (and its metrics URL when asked)."""
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    STARTED.append(proc)
    deadline = time.monotonic() + 30
    metrics = None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"metrics on (http://[\d.]+:\d+/metrics)", line)
        if m:
            metrics = m.group(1)
        m = re.search(r"listening on (http://[\d.]+:\d+)", line)
        if m:
            subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
            return (proc, m.group(1), metrics) if want_metrics else (proc, m.group(1))
    proc.kill()
    raise SystemExit("e2e: capsign did not start")


class Webhook:
    """The app's policy webhook for the helper's failure tests: grants what it is asked, but
    nothing under `secret:`, and answers 503 to the next N calls after `POST /fail` with N.
    `POST /deny` with a resource name denies it from then on (the app removed the user);
    `GET /log` lists the resources each call asked about."""

    def __init__(self):
        self.fail_next = 0
        self.calls = 0
        self.denied = set()
        self.log = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, value):
                body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/log":
                    return self.answer(200, {"calls": hook.log})
                return self.answer(404, {})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/fail":
                    hook.fail_next = int(body or b"1")
                    return self.answer(200, {"fail_next": hook.fail_next})
                if self.path == "/deny":
                    hook.denied.add(body.decode())
                    return self.answer(200, {"denied": sorted(hook.denied)})
                hook.calls += 1
                if hook.fail_next > 0:
                    hook.fail_next -= 1
                    return self.answer(503, {"error": "the permission service is down"})
                asked = json.loads(body)["requested"]
                hook.log.append(sorted(asked))
                return self.answer(200, {"granted": {r: ops for r, ops in asked.items()
                                                     if not r.startswith("secret:") and r not in hook.denied}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class StaticFile:
    """One file served at /, on 127.0.0.1 (a JWKS URL)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            body = f.read()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lambda(emulator, binary, env):
    """Starts the official emulator (cargo-lambda, Runtime API and Function URL front door
    only) and capsign-lambda against it; returns both processes and the function's URL."""
    port = free_port()
    emu = subprocess.Popen(
        [emulator, "lambda", "watch", "--only-lambda-apis", "--disable-cors",
         "-A", "127.0.0.1", "-P", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED.append(emu)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if emu.poll() is not None or time.monotonic() > deadline:
                emu.kill()
                raise SystemExit("e2e: the Lambda emulator did not start")
            time.sleep(0.1)
    fn_env = {k: v for k, v in env.items() if k != "CAPSIGN_LISTEN"}
    fn_env.update({
        "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{port}/.rt",
        "AWS_LAMBDA_FUNCTION_NAME": "_",
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
    })
    fn = subprocess.Popen([binary], env=fn_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    STARTED.append(fn)
    while time.monotonic() < deadline:
        line = fn.stderr.readline()
        if not line:
            break
        if "ready for invocations" in line:
            subprocess.Popen(["cat"], stdin=fn.stderr, stdout=subprocess.DEVNULL)
            return emu, fn, f"http://127.0.0.1:{port}"
    fn.kill()
    emu.kill()
    raise SystemExit("e2e: capsign-lambda did not start")


def run_step(name, sdk, argv, env, expected):
    """Runs one step's test program; its PASS/FAIL lines (each tagged with `sdk`), plus a FAIL
    when the program dies or hangs without reporting one, or reports fewer than `expected`
    checks (a program that reports nothing must not pass)."""
    only = os.environ.get("E2E_ONLY")
    if only and not any(word.strip() and word.strip() in sdk for word in only.split(",")):
        return []
    print(f"== {name}", flush=True)
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        line = f"FAIL [{sdk}]: no result within {STEP_TIMEOUT} s"
        print("  " + line, flush=True)
        return [line]
    lines = [l for l in out.stdout.splitlines() if l.startswith(("PASS", "FAIL"))]
    lines = [f"{l[:4]} [{sdk}]{l[4:]}" for l in lines]
    MEASURED.extend(l for l in out.stdout.splitlines() if l.startswith("MEASURE"))
    if out.returncode != 0 and not any(l.startswith("FAIL") for l in lines):
        lines.append(f"FAIL [{sdk}]: exit {out.returncode}: {(out.stderr or out.stdout)[-2000:]}")
    if len(lines) < expected:
        lines.append(f"FAIL [{sdk}]: {len(lines)} results reported, {expected} expected")
    if out.returncode != 0 and out.stderr.strip():
        print(out.stderr[-3000:], file=sys.stderr)
    for l in lines:
        print("  " + l, flush=True)
    return lines


def main():
    binary, python, lambda_binary, emulator, worker_dev = (os.path.abspath(a) for a in sys.argv[1:6])
    fake = FakeAbly({ABLY_KEY_NAME: ABLY_SECRET, DEMO_KEY_NAME: DEMO_SECRET, REV_KEY_NAME: REV_SECRET},
                    revocable={REV_KEY_NAME})
    ably_port = fake.start()
    webhook = Webhook()
    try:
        run_all(binary, python, lambda_binary, emulator, worker_dev, ably_port, webhook.url)
    finally:
        webhook.stop()
        for p in STARTED:
            p.terminate()
        for p in STARTED:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        fake.stop()


def run_all(binary, python, lambda_binary, emulator, worker_dev, ably_port, webhook_url):
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSIGN_") and k != "ABLY_API_KEY"}

    env = dict(base_env)
    env.update({
        "ABLY_API_KEY": f"{ABLY_KEY_NAME}:{ABLY_SECRET}",
        "CAPSIGN_LISTEN": "127.0.0.1:0",
        "CAPSIGN_COOKIE_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "CAPSIGN_SESSION_SECRET": SESSION_SECRET,
        "CAPSIGN_RULES": os.path.join(HERE, "rules.toml"),
        "CAPSIGN_EMBEDDED_SECRET": secrets.token_hex(32),
        "CAPSIGN_EMBEDDED_CLAIMS": '{"iss":"https://app.example.test"}',
        "CAPSIGN_ABLY_REST_URL": f"http://127.0.0.1:{ably_port}",
        "RUST_LOG": "warn",
        # Stopped at the end: no load balancer to wait for.
        "CAPSIGN_SHUTDOWN_DELAY": "0s",
    })
    capsign, url, metrics_url = start_capsign(
        binary, dict(env, CAPSIGN_METRICS_LISTEN="127.0.0.1:0"), want_metrics=True)

    demo_env = dict(base_env)
    demo_env.update({"CAPSIGN_LISTEN": "127.0.0.1:0", "RUST_LOG": "warn"})
    demo, demo_url = start_capsign(binary, demo_env)

    # A capsign on another origin than the demo page (same host, other port: same-site), with
    # the demo page's origin on its CORS list, a session cookie, and its own grant cookie name
    # (cookies ignore ports, so two capsigns on one host need two names).
    cross_env = dict(env)
    cross_env.update({
        "CAPSIGN_CORS_ORIGINS": demo_url,
        "CAPSIGN_SESSION_COOKIE": "app-session",
        "CAPSIGN_COOKIE_NAME": "__Host-capsign-cross",
    })
    cross, cross_url = start_capsign(binary, cross_env)

    # A capsign that signs with another secret than the fake Ably knows for its key: every
    # credential it mints is refused with a 4014x code.
    badkey_env = dict(env)
    badkey_env["ABLY_API_KEY"] = f"{ABLY_KEY_NAME}:not-the-secret-ably-knows"
    badkey, badkey_url = start_capsign(binary, badkey_env)

    # For the client helper's failure paths: the rules, and the app's webhook for the rest
    # (`hook:*`), which can be told to fail; and the rules alone with CAPSIGN_DENY=reject.
    hooked_env = dict(env, CAPSIGN_POLICY_URL=webhook_url, CAPSIGN_POLICY_SECRET=secrets.token_hex(32))
    hooked, hooked_url = start_capsign(binary, hooked_env)
    strict, strict_url = start_capsign(binary, dict(env, CAPSIGN_DENY="reject"))

    # Revocation: a key with revocable tokens (lifetimes capped at 1 h), the webhook for
    # `room:*`, a revocation list file read every second, and a revocation key per organisation.
    rev_dir = tempfile.mkdtemp(prefix="capsign-e2e-")
    rev_list = os.path.join(rev_dir, "revocations.json")
    with open(rev_list, "w") as f:
        f.write('{"revocations": []}\n')
    revoke_env = dict(hooked_env, **{
        "ABLY_API_KEY": f"{REV_KEY_NAME}:{REV_SECRET}",
        "CAPSIGN_REVOCABLE_TOKENS": "true",
        "CAPSIGN_REVOCATIONS": rev_list,
        "CAPSIGN_REVOCATIONS_REFRESH": "1s",
        "CAPSIGN_REVOCATION_KEY": "org:{claims.org}",
    })
    revocable, revocable_url = start_capsign(binary, revoke_env)

    # The same production configuration on Lambda, behind the official emulator's Function
    # URL front door.
    emulator, function, lambda_url = start_lambda(emulator, lambda_binary, env)

    # The Cloudflare Worker under workerd, started as the binary is (scripts/worker-dev), with
    # the same settings: the same suites run against it below.
    workers = {name: start_capsign(worker_dev, worker_env)[1] for name, worker_env in {
        "CAPSIGN": env, "CAPSIGN_CROSS": cross_env, "CAPSIGN_BADKEY": badkey_env,
        "CAPSIGN_HOOKED": hooked_env, "CAPSIGN_STRICT": dict(env, CAPSIGN_DENY="reject"),
    }.items()}
    keys = os.path.join(ROOT, "tests", "data", "keys")
    jwks = StaticFile(os.path.join(keys, "jwks.json"))
    keyed = {k: v for k, v in env.items() if k != "CAPSIGN_SESSION_SECRET"}
    workers["WORKER_PEM"] = start_capsign(worker_dev, dict(
        keyed, CAPSIGN_SESSION_PUBLIC_KEY=os.path.join(keys, "ec.pub"),
        CAPSIGN_SESSION_ALGORITHMS="ES256, EdDSA"))[1]
    workers["WORKER_JWKS"] = start_capsign(worker_dev, dict(keyed, CAPSIGN_SESSION_JWKS=jwks.url))[1]

    test_env = dict(os.environ)
    test_env.update({
        "CAPSIGN": url,
        "CAPSIGN_DEMO": demo_url,
        "CAPSIGN_CROSS": cross_url,
        "CAPSIGN_BADKEY": badkey_url,
        "CAPSIGN_HOOKED": hooked_url,
        "CAPSIGN_STRICT": strict_url,
        "WEBHOOK": webhook_url,
        "CAPSIGN_METRICS": metrics_url or "",
        "ABLY_PORT": str(ably_port),
        "SESSION_ALICE": session("alice"),
        "SESSION_BOB": session("bob"),
        "SESSION_EXPIRED": session("alice", lifetime=-60),
        "SESSION_BOB_ACME": session("bob", org="acme"),
        "SESSION_CAROL_ACME": session("carol", org="acme"),
        "SESSION_DAVE_GLOBEX": session("dave", org="globex"),
        "CAPSIGN_REVOKE": revocable_url,
        "CAPSIGN_BIN": binary,
        "REVOKE_ENV": json.dumps({k: v for k, v in revoke_env.items()
                                  if k.startswith("CAPSIGN_") or k == "ABLY_API_KEY"}),
        "UNREVOCABLE_KEY": f"{ABLY_KEY_NAME}:{ABLY_SECRET}",
        "SCREENSHOT": os.environ.get("SCREENSHOT", os.path.join(ROOT, "target", "e2e-browser.png")),
    })
    results = []
    results += run_step("ably-js on Node", "ably-js node",
                        ["node", os.path.join(HERE, "node_test.mjs")], test_env, EXPECTED["ably-js node"])
    results += run_step("ably-python", "ably-python",
                        [python, os.path.join(HERE, "python_test.py")], test_env, EXPECTED["ably-python"])
    results += run_step("the client helper (clients/js) with ably-js on Node", "helper node",
                        ["node", os.path.join(HERE, "helper_test.mjs")], test_env, EXPECTED["helper node"])
    results += run_step("the client helper's examples (Node)", "helper examples",
                        ["node", os.path.join(HERE, "examples_test.mjs")], test_env, EXPECTED["helper examples"])
    results += run_step("ably-js in Chromium", "ably-js chromium",
                        ["node", os.path.join(HERE, "browser_test.mjs")], test_env, EXPECTED["ably-js chromium"])
    results += run_step("revocation: capsign revoke, ably-js on Realtime", "revocation",
                        ["node", os.path.join(HERE, "revoke_test.mjs")], test_env, EXPECTED["revocation"])
    results += run_step("metrics, read by the official parser", "metrics",
                        [python, os.path.join(HERE, "metrics_check.py")], test_env, EXPECTED["metrics"])
    results += run_step("the Kubernetes manifest", "deploy",
                        [python, os.path.join(HERE, "deploy_check.py")], test_env, EXPECTED["deploy"])
    lambda_env = dict(test_env, CAPSIGN=lambda_url)
    results += run_step("ably-js on Node, through capsign-lambda in the Lambda emulator",
                        "ably-js node, Lambda", ["node", os.path.join(HERE, "node_test.mjs")],
                        lambda_env, EXPECTED["ably-js node, Lambda"])
    results += run_step("ably-python, through capsign-lambda in the Lambda emulator",
                        "ably-python, Lambda", [python, os.path.join(HERE, "python_test.py")],
                        lambda_env, EXPECTED["ably-python, Lambda"])

    worker_env = dict(test_env, **workers)
    results += run_step("ably-js on Node, through capsign-worker under workerd", "ably-js node, Worker",
                        ["node", os.path.join(HERE, "node_test.mjs")], worker_env,
                        EXPECTED["ably-js node, Worker"])
    results += run_step("ably-python, through capsign-worker under workerd", "ably-python, Worker",
                        [python, os.path.join(HERE, "python_test.py")], worker_env,
                        EXPECTED["ably-python, Worker"])
    results += run_step("the client helper with ably-js on Node, through capsign-worker",
                        "helper node, Worker", ["node", os.path.join(HERE, "helper_test.mjs")],
                        worker_env, EXPECTED["helper node, Worker"])
    results += run_step("public-key sessions through the Worker (PEM, a JWKS URL fetched)",
                        "public keys, Worker", ["node", os.path.join(HERE, "worker_keys_test.mjs")],
                        worker_env, EXPECTED["public keys, Worker"])
    results += run_step("ably-js in Chromium, the cross-origin capsign being the Worker",
                        "ably-js chromium, Worker", ["node", os.path.join(HERE, "browser_test.mjs")],
                        worker_env, EXPECTED["ably-js chromium, Worker"])

    print()
    print("e2e summary, per SDK:")
    for sdk in EXPECTED:
        if os.environ.get("E2E_ONLY") and not any(f"[{sdk}]" in r for r in results):
            continue
        mine = [r for r in results if f"[{sdk}]" in r]
        passed = sum(r.startswith("PASS") for r in mine)
        print(f"  {sdk}: {passed}/{len(mine)} passed")
    if MEASURED:
        print("measured:")
        for line in MEASURED:
            print("  " + line[len("MEASURE "):])
    failed = [r for r in results if r.startswith("FAIL")]
    if failed or not results:
        print(f"e2e: {len(failed)} failed", file=sys.stderr)
        sys.exit(1)
    print(f"e2e: all {len(results)} checks passed; screenshot at {test_env['SCREENSHOT']}")


if __name__ == "__main__":
    main()
