#!/usr/bin/env python3
"""Cold start of capsign-lambda next to the server's, on 127.0.0.1 (bench/cold-start runs it).

- capsign-lambda: from process start to its answer to the first invocation (a Function URL
  event for GET /auth with a new grant) posted to a Runtime API (a small one in this script,
  handing out that one event), and the process's peak RSS (VmHWM) at that moment.
- capsign (the server): from process start to the first 200 from GET /auth with a new grant,
  and its peak RSS then.

Both with the same production-like settings (jwt identity, rules, a cookie key); medians of
RUNS runs. Usage: cold_start.py CAPSIGN CAPSIGN_LAMBDA [RUNS]
"""

import base64
import http.client
import http.server
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, hs256  # noqa: E402

SESSION_SECRET = secrets.token_hex(32)
LIMIT_S = 10


def session(sub):
    now = int(time.time())
    return hs256({"sub": sub, "iat": now, "exp": now + 3600}, SESSION_SECRET)


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


CAPABILITY = json.dumps({"doc:cold": ["subscribe"]})


class RuntimeApi(http.server.ThreadingHTTPServer):
    """Hands out one event, then notes when its response arrives."""

    daemon_threads = True

    def __init__(self, event):
        super().__init__(("127.0.0.1", 0), Handler)
        self.event = json.dumps(event).encode()
        self.handed = False
        self.answered = threading.Event()
        self.answer = None
        self.answered_at = None

    def handle_error(self, request, client_address):
        # The function is killed while its next /invocation/next waits: a reset, expected.
        pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith("/invocation/next") and not self.server.handed:
            self.server.handed = True
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "cold-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                             "arn:aws:lambda:us-east-1:123456789012:function:capsign")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.server.event)))
            self.end_headers()
            self.wfile.write(self.server.event)
        else:
            # The next event never comes; the process is stopped first (bounded wait).
            self.server.answered.wait(LIMIT_S)
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path.endswith("/response"):
            self.server.answered_at = time.perf_counter()
            self.server.answer = json.loads(body)
            self.server.answered.set()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def function_url_event(bearer):
    query = "capability=" + urllib.parse.quote(CAPABILITY)
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/auth", "rawQueryString": query,
        "headers": {"host": "x.lambda-url.us-east-1.on.aws", "authorization": f"Bearer {bearer}"},
        "requestContext": {
            "accountId": "anonymous", "apiId": "x", "domainName": "x.lambda-url.us-east-1.on.aws",
            "http": {"method": "GET", "path": "/auth", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1",
                     "userAgent": "bench"},
            "requestId": "cold", "routeKey": "$default", "stage": "$default",
            "time": "03/Dec/2026:00:00:00 +0000", "timeEpoch": 0,
        },
        "isBase64Encoded": False,
    }


def lambda_cold_start(binary, env, bearer):
    api = RuntimeApi(function_url_event(bearer))
    threading.Thread(target=api.serve_forever, daemon=True).start()
    fn_env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.server_address[1]}",
                  AWS_LAMBDA_FUNCTION_NAME="capsign", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128",
                  AWS_LAMBDA_FUNCTION_VERSION="$LATEST")
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary], env=fn_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not api.answered.wait(LIMIT_S):
            raise SystemExit("cold-start: capsign-lambda did not answer within 10 s")
        rss = peak_rss_kib(proc.pid)
        status = api.answer.get("statusCode")
        if status != 200:
            raise SystemExit(f"cold-start: capsign-lambda answered {status}: {api.answer}")
        return (api.answered_at - t0) * 1000, rss
    finally:
        proc.kill()
        proc.wait()
        api.shutdown()
        api.server_close()


def server_cold_start(binary, env, bearer):
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary], env=dict(env, CAPSIGN_LISTEN=f"127.0.0.1:{port}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = "/auth?capability=" + urllib.parse.quote(CAPABILITY)
    try:
        while True:
            if time.perf_counter() - t0 > LIMIT_S:
                raise SystemExit("cold-start: the server did not answer within 10 s")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", path, headers={"Authorization": f"Bearer {bearer}"})
                status = conn.getresponse().status
                conn.close()
            except OSError:
                time.sleep(0.0002)
                continue
            took = (time.perf_counter() - t0) * 1000
            if status != 200:
                raise SystemExit(f"cold-start: the server answered {status}")
            return took, peak_rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def main():
    server, function = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "rules.toml")
        with open(rules, "w") as f:
            f.write('[[rule]]\nresource = "doc:*"\nops = ["subscribe"]\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPSIGN_", "AWS_"))}
        env.update({
            "ABLY_API_KEY": "bench0.bench1:" + secrets.token_hex(16),
            "CAPSIGN_COOKIE_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "CAPSIGN_SESSION_SECRET": SESSION_SECRET,
            "CAPSIGN_RULES": rules,
            "RUST_LOG": "warn",
            # Stopped after each sample: no load balancer to wait for.
            "CAPSIGN_SHUTDOWN_DELAY": "0s",
        })
        bearer = session("alice")
        rows = {"capsign (server)": [], "capsign-lambda": []}
        for _ in range(runs):
            # Interleaved, so both see the same machine.
            rows["capsign (server)"].append(server_cold_start(server, env, bearer))
            rows["capsign-lambda"].append(lambda_cold_start(function, env, bearer))
    print(f"cold start, {runs} runs each, interleaved, medians ({os.cpu_count()} cores)")
    print()
    print("| binary | start to first answered /auth | peak RSS then |")
    print("| --- | ---: | ---: |")
    for name, samples in rows.items():
        ms = statistics.median(s[0] for s in samples)
        rss = statistics.median(s[1] for s in samples)
        print(f"| {name} | {ms:.1f} ms | {rss / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
