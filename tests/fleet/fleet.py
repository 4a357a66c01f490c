#!/usr/bin/env python3
"""capsign as a fleet: three instances sharing one cookie key behind Debian's nginx and HAProxy,
all on 127.0.0.1 (tests/fleet/run installs the balancers and builds capsign first).

Phases, each reporting requests served, errors and p99:
  1. nginx, round-robin, Host kept: one client acquires channels one by one; every request
     lands on another instance than the one before, and every credential covers everything
     the client holds. Every instance serves.
  2. HAProxy with active health checks on /readyz: a rolling restart of all three instances
     (SIGTERM, one at a time) under steady load, with zero failed or non-2xx requests.
  1a. The revocation list: every instance reads it from one URL (ETag, every second); an
     entry published for one user is honoured by all three instances within one refresh
     interval (the user's next credential on each is issued after the revocation, and each
     instance counts the revoked grant); another user is untouched.
  1b. A mixed fleet behind nginx: the native server and the Cloudflare Worker under workerd
     (scripts/worker-dev), sharing one cookie key; one client's grants carried from one to the
     other and back, request by request.
  3. The three-step cookie-key rotation of docs/security.md, each step rolled across the fleet under the
     same load; step 3 waits until the old key id stops growing in every instance's metrics.
     No failed request; no grant lost.

Usage: fleet.py CAPSIGN_BINARY WORKDIR [WORKER_DEV]
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import http.client
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "capsign.test"  # the public name; CAPSIGN_ALLOWED_HOSTS refuses any other Host
ABLY_KEY_NAME, ABLY_SECRET = "fleetA.fleetK", "fleet-ably-secret-" + secrets.token_hex(8)
SESSION_SECRET = secrets.token_hex(32)
CLIENTS = 4                 # load threads, one user each
MAX_CHANNELS = 40           # new grants per load client, then renewals only
PHASE_LIMIT_S = 120         # no phase runs longer
START_LIMIT_S = 20          # for a process to start or a server to come up

RULES = """
[[rule]]
resource = "chat:*"
ops = ["subscribe", "publish"]
"""


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def session(sub):
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + 3600}).encode())
    sig = hmac.new(SESSION_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def capability_of(jwt):
    """The capability of an Ably JWT, after checking its HMAC with the Ably key's secret."""
    head, body, sig = jwt.split(".")
    want = hmac.new(ABLY_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(want, b64url_decode(sig)):
        raise ValueError("the JWT's signature does not verify")
    return json.loads(json.loads(b64url_decode(body))["x-ably-capability"])


HANDED_OUT = set()


def free_port():
    """A free loopback port, never one handed out before in this run: the kernel may give
    the same free port twice, and two instances (or an instance and a balancer) would then
    race for it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port


def p99(latencies):
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class Instance:
    """One capsign process on a fixed port (so a restart comes back where the balancers look)."""

    def __init__(self, name, binary, env):
        self.name, self.binary, self.env = name, binary, dict(env)
        self.port, self.metrics_port = free_port(), free_port()
        self.proc = None

    def start(self, cookie_key=None):
        if cookie_key is not None:
            self.env["CAPSIGN_COOKIE_KEY"] = cookie_key
        env = dict(self.env, CAPSIGN_LISTEN=f"127.0.0.1:{self.port}",
                   CAPSIGN_METRICS_LISTEN=f"127.0.0.1:{self.metrics_port}")
        self.proc = subprocess.Popen([self.binary], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + START_LIMIT_S
        said = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            said.append(line.rstrip())
            if "listening on" in line:
                threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
                return
        self.proc.kill()
        raise SystemExit(f"fleet: {self.name} did not start; it said: " + " | ".join(said[-5:]))

    @staticmethod
    def _drain(proc):
        for line in proc.stderr:
            if "WARN" in line or "ERROR" in line:
                print(f"  (capsign) {line.rstrip()}", flush=True)

    def stop(self):
        """SIGTERM, as an orchestrator sends it; returns the exit code (None: killed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def key_opens(self):
        """`capsign_grant_cookie_keys_total` by key id, from this instance's metrics."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        out = {}
        for m in re.finditer(r'^capsign_grant_cookie_keys_total\{key_id="([^"]*)"\} (\S+)$', text, re.M):
            out[m.group(1)] = float(m.group(2))
        return out


class ListServer:
    """The app's revocation list at a URL on 127.0.0.1, with an ETag, and conditional GETs
    answered 304."""

    def __init__(self):
        self.body = b'{"revocations": []}'
        self.gets = 0
        lists = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                lists.gets += 1
                body = lists.body
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/revocations.json"

    def publish(self, entries):
        self.body = json.dumps({"revocations": entries}).encode()

    def kill(self):
        self.server.shutdown()
        self.server.server_close()


def metric(inst, name):
    """One unlabelled sample of an instance's metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", inst.metrics_port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def revocation_through_nginx(instances, lb, lists):
    """Phase 1a: a list entry for carol reaches every instance within one refresh interval."""
    print("== the revocation list: one entry, three instances, one refresh interval", flush=True)
    errors, latencies, served = [], [], 0
    carol, dave = Client("carol", lb.port), Client("dave", lb.port)
    for n in (1, 2, 3):
        for c in (carol, dave):
            ok, error, _, took = c.auth(f"chat:rev-{n}")
            latencies.append(took)
            served += ok
            if not ok:
                errors.append(error)
    revoked_before = [metric(i, "capsign_grants_revoked_total") or 0 for i in instances]
    before_ms = int(time.time() * 1000)
    lists.publish([{"clientId": "carol", "before": before_ms, "resources": ["chat:rev-2"]}])
    time.sleep(1.0 + 0.5)  # CAPSIGN_REVOCATIONS_REFRESH, and the time to fetch
    upstreams = set()
    for _ in instances:
        for c in (carol, dave):
            headers = {"Host": HOST, "Authorization": c.bearer, "Cookie": c.cookie}
            conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
            started = time.monotonic()
            conn.request("GET", "/auth", headers=headers)
            resp = conn.getresponse()
            body = resp.read().decode()
            latencies.append(time.monotonic() - started)
            conn.close()
            if resp.status != 200:
                errors.append(f"{c.name}: HTTP {resp.status}: {body[:200]}")
                continue
            served += 1
            iat = json.loads(b64url_decode(body.split(".")[1]))["iat"]
            upstream = resp.getheader("X-Upstream")
            revoked = iat * 1000 >= before_ms
            if c is carol:
                upstreams.add(upstream)
                if not revoked:
                    errors.append(f"{upstream} issued carol a credential at {iat}, before the "
                                  f"revocation at {before_ms} ms: the list was not read in time")
            elif revoked:
                errors.append(f"{upstream} treated dave as revoked")
    if len(upstreams) != len(instances):
        errors.append(f"carol was served by {sorted(map(str, upstreams))}, not by all three")
    for inst, was in zip(instances, revoked_before):
        now = metric(inst, "capsign_grants_revoked_total") or 0
        if now <= was:
            errors.append(f"{inst.name} counted no revoked grant")
    if lists.gets < 2 * len(instances):
        errors.append(f"the list was fetched {lists.gets} times: every instance should refresh it")
    lists.publish([])
    return report("revocation list honoured by all 3 instances within one refresh interval",
                  served, errors, latencies)


class Balancer:
    """nginx or HAProxy in the foreground, started and stopped by PID."""

    def __init__(self, argv, port, workdir, name):
        self.port, self.name = port, name
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"fleet: {name} exited at start; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"fleet: {name} did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def nginx(workdir, instances, name="nginx"):
    port = free_port()
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o777)
    servers = "\n".join(f"        server 127.0.0.1:{i.port};" for i in instances)
    conf = f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream capsign {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://capsign;
            # capsign's Host allow-list and cross-site check need the name the client used.
            proxy_set_header Host $http_host;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return Balancer(["nginx", "-p", d, "-e", f"{d}/error.log", "-c", path], port, workdir, name)


def haproxy(workdir, instances, usual=False):
    """HAProxy in front of `instances`, health-checking /readyz: tuned (200 ms checks, fall 1,
    retries), or with `usual` the checks most configurations have (HAProxy's default `inter
    2s`, `fall 3`, `rise 2`) and no retries at all."""
    port = free_port()
    name = "haproxy-usual" if usual else "haproxy"
    sock = os.path.join(workdir, f"{name}.sock")
    servers = "\n".join(f"    server {i.name} 127.0.0.1:{i.port} check" for i in instances)
    if usual:
        retrying = "    retries 0"
        checks = "    default-server inter 2s fall 3 rise 2"
    else:
        retrying = ("    retries 3\n    option redispatch 1\n"
                    "    retry-on conn-failure empty-response response-timeout")
        checks = "    default-server inter 200ms fastinter 100ms downinter 200ms fall 1 rise 2"
    conf = f"""
global
    maxconn 512
    stats socket {sock} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
{retrying}

frontend public
    bind 127.0.0.1:{port}
    default_backend capsign

backend capsign
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{checks}
    http-response set-header X-Upstream %s
{servers}
"""
    path = os.path.join(workdir, f"{name}.cfg")
    with open(path, "w") as f:
        f.write(conf)
    b = Balancer(["haproxy", "-db", "-f", path], port, workdir, name)
    b.sock = sock
    return b


def haproxy_status(balancer):
    """Server name -> status (UP, DOWN, …) from HAProxy's stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(balancer.sock)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    out = {}
    for line in data.decode().splitlines():
        cols = line.split(",")
        if len(cols) > 17 and cols[0] == "capsign" and cols[1] not in ("BACKEND", "FRONTEND"):
            out[cols[1]] = cols[17]
    return out


def wait_until(what, predicate, limit=START_LIMIT_S):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"fleet: {what} did not happen within {limit} s")


class Client:
    """A user with a cookie jar of one cookie, checking each credential covers all it holds."""

    def __init__(self, name, port):
        self.name, self.port = name, port
        self.bearer = "Bearer " + session(name)
        self.cookie = None
        self.held = set()
        self.conn = None

    def auth(self, channel=None):
        """One /auth; returns (ok, error text, upstream, seconds)."""
        path = "/auth"
        if channel:
            cap = json.dumps({channel: ["subscribe"]})
            path += "?capability=" + urllib.parse.quote(cap)
        headers = {"Host": HOST, "Authorization": self.bearer}
        if self.cookie:
            headers["Cookie"] = self.cookie
        started = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request("GET", path, headers=headers)
            resp = self.conn.getresponse()
            body = resp.read().decode()
        except (OSError, http.client.HTTPException) as e:
            if self.conn:
                self.conn.close()
            self.conn = None
            return False, f"{type(e).__name__}: {e}", None, time.monotonic() - started
        took = time.monotonic() - started
        upstream = resp.getheader("X-Upstream")
        if resp.status != 200:
            return False, f"HTTP {resp.status}: {body[:200]}", upstream, took
        for c in resp.msg.get_all("Set-Cookie") or []:
            if c.startswith("__Host-capsign="):
                self.cookie = c.split(";", 1)[0]
        try:
            cap = capability_of(body)
        except (ValueError, KeyError) as e:
            return False, f"bad credential: {e}", upstream, took
        if channel:
            self.held.add(channel)
        lost = self.held - set(cap)
        if lost:
            return False, f"grants lost: {sorted(lost)[:5]}", upstream, took
        return True, None, upstream, took


class Load:
    """Steady load: CLIENTS threads, each a user acquiring a channel every fourth request."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.phase = None
        self.results = {}
        self.threads = [threading.Thread(target=self.run, args=(f"load-{n}",), daemon=True)
                        for n in range(CLIENTS)]

    def start(self, phase):
        self.phase = phase
        for t in self.threads:
            t.start()

    def set_phase(self, phase):
        with self.lock:
            self.phase = phase

    def run(self, name):
        client = Client(name, self.port)
        n = 0
        deadline = time.monotonic() + 4 * PHASE_LIMIT_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            channel = f"chat:{name}-{n}" if n % 4 == 1 and len(client.held) < MAX_CHANNELS else None
            ok, error, _, took = client.auth(channel)
            with self.lock:
                r = self.results.setdefault(self.phase, {"ok": 0, "errors": [], "latency": []})
                r["latency"].append(took)
                if ok:
                    r["ok"] += 1
                else:
                    r["errors"].append(error)
            time.sleep(0.002)
        self.held = getattr(self, "held", 0) + len(client.held)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def report(phase, served, errors, latencies):
    line = f"  {phase}: {served} served, {len(errors)} errors, p99 {p99(latencies):.1f} ms"
    print(line, flush=True)
    for e in errors[:5]:
        print(f"    error: {e}", flush=True)
    return not errors and served > 0


def round_robin_through_nginx(instances, lb, user="alice", what="3 instances"):
    print(f"== nginx round-robin on 127.0.0.1:{lb.port}: {what}", flush=True)
    client = Client(user, lb.port)
    errors, latencies, upstreams, served = [], [], [], 0
    for n in range(1, 31):
        ok, error, upstream, took = client.auth(f"chat:nginx-{n}")
        latencies.append(took)
        upstreams.append(upstream)
        if ok:
            served += 1
        else:
            errors.append(error)
    for n in range(1, len(upstreams)):
        if upstreams[n] is None or upstreams[n] == upstreams[n - 1]:
            errors.append(f"request {n + 1} landed on {upstreams[n]}, as request {n} did")
    served_by = set(upstreams)
    want = {f"127.0.0.1:{i.port}" for i in instances}
    if served_by != want:
        errors.append(f"served by {sorted(map(str, served_by))}, not by all of {sorted(want)}")
    if len(client.held) != 30:
        errors.append(f"the client holds {len(client.held)} grants, not 30")
    return report(f"nginx: 30 grants acquired one per request across {what}",
                  served, errors, latencies)


def rolling_restart(instances, lb, load, phase, key=None):
    """Restarts each instance in turn (optionally with a new cookie key), waiting for HAProxy
    to see it down, then up again; returns the exit codes."""
    load.set_phase(phase)
    codes = []
    for inst in instances:
        code = inst.stop()
        codes.append(code)
        inst.start(cookie_key=key)
        wait_until(f"HAProxy seeing {inst.name} up", lambda: haproxy_status(lb).get(inst.name) == "UP")
        time.sleep(0.3)
    return codes


def phase_report(load, phase, codes):
    with load.lock:
        r = load.results.get(phase, {"ok": 0, "errors": [], "latency": []})
        errors = list(r["errors"])
        served, latencies = r["ok"], list(r["latency"])
    bad = [c for c in codes if c != 0]
    if bad:
        errors.append(f"exit codes on SIGTERM: {codes}")
    return report(phase, served, errors, latencies)


def main():
    binary, workdir = sys.argv[1], sys.argv[2]
    worker_dev = sys.argv[3] if len(sys.argv) > 3 else None
    os.makedirs(workdir, exist_ok=True)
    rules = os.path.join(workdir, "rules.toml")
    with open(rules, "w") as f:
        f.write(RULES)
    first_key = subprocess.run([binary, "keygen"], capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSIGN_") and k != "ABLY_API_KEY"}
    env.update({
        "ABLY_API_KEY": f"{ABLY_KEY_NAME}:{ABLY_SECRET}",
        "CAPSIGN_COOKIE_KEY": first_key,
        "CAPSIGN_SESSION_SECRET": SESSION_SECRET,
        "CAPSIGN_RULES": rules,
        "CAPSIGN_ALLOWED_HOSTS": HOST,
        # Longer than HAProxy's check interval (200 ms, fall 1): it stops sending first.
        "CAPSIGN_SHUTDOWN_DELAY": "1s",
        "CAPSIGN_SHUTDOWN_GRACE": "5s",
        "RUST_LOG": "warn",
    })
    lists = ListServer()
    env.update({"CAPSIGN_REVOCATIONS": lists.url, "CAPSIGN_REVOCATIONS_REFRESH": "1s"})
    instances = [Instance(f"capsign{n}", binary, env) for n in (1, 2, 3)]
    started = [lists]
    passed = []
    try:
        for i in instances:
            i.start()
            started.append(i)

        lb = nginx(workdir, instances)
        started.append(lb)
        passed.append(round_robin_through_nginx(instances, lb))
        passed.append(revocation_through_nginx(instances, lb, lists))

        if worker_dev:
            # The Worker under workerd, started as the binary is, with the same settings and
            # key; nginx alternates between it and a native instance.
            worker = Instance("worker", worker_dev, env)
            worker.start()
            started.append(worker)
            mixed = nginx(workdir, [instances[0], worker], name="nginx-mixed")
            started.append(mixed)
            passed.append(round_robin_through_nginx(
                [instances[0], worker], mixed, user="bob",
                what="the native server and the Worker, alternately"))
            mixed.stop()
            worker.stop()

        lb = haproxy(workdir, instances)
        started.append(lb)
        wait_until("HAProxy seeing every instance up",
                   lambda: all(haproxy_status(lb).get(i.name) == "UP" for i in instances))
        print(f"== HAProxy with health checks on /readyz, 127.0.0.1:{lb.port}; "
              f"{CLIENTS} clients of steady load", flush=True)
        load = Load(lb.port)
        load.start("steady load")
        time.sleep(1.5)
        passed.append(phase_report(load, "steady load", []))

        phase = "rolling restart of all 3 instances (SIGTERM, one at a time)"
        codes = rolling_restart(instances, lb, load, phase)
        passed.append(phase_report(load, phase, codes))

        # The rotation of docs/security.md: `capsign keygen --current` gives each step; each is rolled
        # across the fleet under load.
        key = first_key
        for step in (1, 2, 3):
            if step == 3:
                old_id = key.split(",")[1].split(":")[0]
                # Every active client has been resealed when the old key stops opening cookies.
                load.set_phase("waiting for the old key id to stop growing")

                def old_key_idle():
                    before = [i.key_opens().get(old_id, 0) for i in instances]
                    time.sleep(0.5)
                    return [i.key_opens().get(old_id, 0) for i in instances] == before

                wait_until("the old cookie key going idle", old_key_idle, limit=PHASE_LIMIT_S)
            key = subprocess.run([binary, "keygen", "--current", key], capture_output=True,
                                 text=True, check=True).stdout.strip()
            phase = f"cookie-key rotation, step {step} of 3, rolled across the fleet"
            codes = rolling_restart(instances, lb, load, phase, key=key)
            passed.append(phase_report(load, phase, codes))

        load.set_phase("after the rotation")
        time.sleep(1)
        load.finish()
        passed.append(phase_report(load, "after the rotation", []))

        # Issue 28: capsign's own drain defaults behind the health checks most HAProxy
        # configurations have, with no retries to hide a lost request. The instances restart
        # first (without load) so every one runs with the defaults.
        for i in instances:
            for k in ("CAPSIGN_SHUTDOWN_DELAY", "CAPSIGN_SHUTDOWN_GRACE"):
                i.env.pop(k, None)
            i.stop()
            i.start()
        usual = haproxy(workdir, instances, usual=True)
        started.append(usual)
        wait_until("HAProxy (usual checks) seeing every instance up",
                   lambda: all(haproxy_status(usual).get(i.name) == "UP" for i in instances))
        print(f"== HAProxy with its usual checks (inter 2s fall 3 rise 2, no retries), "
              f"127.0.0.1:{usual.port}; capsign's default drain", flush=True)
        defaults = Load(usual.port)
        phase = "rolling restart with capsign's default drain, HAProxy's usual checks, no retries"
        defaults.start(phase)
        time.sleep(1)
        codes = rolling_restart(instances, usual, defaults, phase)
        time.sleep(1)
        defaults.finish()
        passed.append(phase_report(defaults, phase, codes))
        load.results.update({f"defaults: {k}": v for k, v in defaults.results.items()})
        with load.lock:
            idle = load.results.get("waiting for the old key id to stop growing")
        if idle and idle["errors"]:
            passed.append(report("waiting for the old key id to stop growing", idle["ok"],
                                 idle["errors"], idle["latency"]))
        total = sum(r["ok"] for r in load.results.values())
        errors = sum(len(r["errors"]) for r in load.results.values())
        print(f"  load in all: {total} served, {errors} errors, "
              f"{load.held} grants held by the load clients at the end", flush=True)
    finally:
        for thing in reversed(started):
            if isinstance(thing, Balancer):
                thing.stop()
            else:
                thing.kill()
    if not all(passed):
        print(f"fleet: {passed.count(False)} of {len(passed)} phases failed", file=sys.stderr)
        sys.exit(1)
    print(f"fleet: all {len(passed)} phases passed")


if __name__ == "__main__":
    main()
