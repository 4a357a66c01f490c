#!/usr/bin/env python3
"""Debian's Prometheus scraping two capsign instances on 127.0.0.1 (tests/metrics/run installs
it and builds capsign first).

  1. promtool check metrics on the text exposition (what a scraper that asks for nothing
     gets), after some traffic;
  2. Prometheus scrapes both instances every second with deploy/prometheus/capsign-alerts.yml
     loaded: both targets up, the dashboard's job and instance variables list them, every
     query of deploy/grafana-capsign.json evaluates (the variables at ".*"), `sum(capsign_ready)`
     is 2, and every alerting rule evaluates healthy with none pending or firing.

Prints PASS/FAIL lines; exit 1 on a failure. Usage: metrics.py ROOT WORKDIR
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

LIMIT_S = 40  # for a process to start, or Prometheus to see what it should


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.headers.get("content-type", ""), res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def wait_for(what, check):
    deadline = time.monotonic() + LIMIT_S
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as e:
            last = e
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {LIMIT_S} s (last: {last!r})")


class Process:
    def __init__(self, argv, env, log):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def query(prom, expr):
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, _, body = get(url)
    answer = json.loads(body)
    if status != 200 or answer.get("status") != "success":
        raise AssertionError(f"{expr}: {answer.get('error', body)}")
    return answer["data"]["result"]


def main():
    root, work = sys.argv[1], sys.argv[2]
    binary = os.path.join(root, "target", "release", "capsign")
    started, results = [], []

    def check(name, fn):
        try:
            detail = fn()
            results.append(True)
            print(f"PASS metrics: {name}" + (f" ({detail})" if detail else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - any failure is the check's failure
            results.append(False)
            print(f"FAIL metrics: {name}: {e}", flush=True)

    try:
        instances = []
        for n in range(2):
            port, metrics = free_port(), free_port()
            env = dict(os.environ, CAPSIGN_LISTEN=f"127.0.0.1:{port}",
                       CAPSIGN_METRICS_LISTEN=f"127.0.0.1:{metrics}", RUST_LOG="warn",
                       CAPSIGN_SHUTDOWN_DELAY="0s")
            env.pop("PORT", None)
            started.append(Process([binary], env, os.path.join(work, f"capsign{n}.log")))
            instances.append((port, metrics))
        for port, metrics in instances:
            wait_for(f"capsign on {port}", lambda p=metrics: get(f"http://127.0.0.1:{p}/metrics")[0] == 200)
            for path in ["/healthz", "/readyz", "/auth?capability=%7B%7D", "/nowhere"]:
                get(f"http://127.0.0.1:{port}{path}")

        def text_exposition():
            status, ctype, body = get(f"http://127.0.0.1:{instances[0][1]}/metrics")
            assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), ctype
            path = os.path.join(work, "metrics.txt")
            with open(path, "w") as f:
                f.write(body)
            out = subprocess.run(["promtool", "check", "metrics"], stdin=open(path),
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stdout + out.stderr
            return f"{body.count('# TYPE ')} families, no complaint"
        check("promtool check metrics on the text exposition", text_exposition)

        prom = free_port()
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {os.path.join(root, "deploy", "prometheus", "capsign-alerts.yml")}
scrape_configs:
  - job_name: capsign
    static_configs:
      - targets: [{", ".join(f'"127.0.0.1:{m}"' for _, m in instances)}]
""")
        started.append(Process(["prometheus", f"--config.file={config}",
                                f"--storage.tsdb.path={os.path.join(work, 'data')}",
                                f"--web.listen-address=127.0.0.1:{prom}"],
                               dict(os.environ), os.path.join(work, "prometheus.log")))

        def scraped():
            wait_for("both targets up", lambda: len(query(prom, 'up{job="capsign"} == 1')) == 2)
            # Traffic while Prometheus scrapes, until a rate shows it.
            def traffic_seen():
                for port, _ in instances:
                    get(f"http://127.0.0.1:{port}/auth?capability=%7B%7D")
                return query(prom, 'sum(rate(capsign_http_requests_total{route="auth"}[1m])) > 0')
            wait_for("a rate of /auth requests", traffic_seen)
            jobs = json.loads(get(f"http://127.0.0.1:{prom}/api/v1/label/job/values?"
                                  + urllib.parse.urlencode({"match[]": "capsign_build_info"}))[2])["data"]
            assert jobs == ["capsign"], jobs
            inst = json.loads(get(f"http://127.0.0.1:{prom}/api/v1/label/instance/values?"
                                  + urllib.parse.urlencode({"match[]": 'capsign_build_info{job=~".*"}'}))[2])["data"]
            assert sorted(inst) == sorted(f"127.0.0.1:{m}" for _, m in instances), inst
            return "both up; the job and instance variables list them"
        check("Prometheus scrapes both instances", scraped)

        def dashboard():
            with open(os.path.join(root, "deploy", "grafana-capsign.json")) as f:
                panels = json.load(f)["panels"]
            n = 0
            for panel in panels:
                for target in panel["targets"]:
                    expr = (target["expr"].replace("$__rate_interval", "1m")
                            .replace("$job", ".*").replace("$instance", ".*"))
                    query(prom, expr)
                    n += 1
            ready = query(prom, 'sum(capsign_ready{job=~".*",instance=~".*"})')
            assert ready and float(ready[0]["value"][1]) == 2, ready
            return f"{n} queries evaluate; sum(capsign_ready) = 2"
        check("every dashboard query evaluates", dashboard)

        def rules():
            # Two evaluations at least, so every rule has run.
            time.sleep(2.5)
            groups = json.loads(get(f"http://127.0.0.1:{prom}/api/v1/rules")[2])["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert len(rules) >= 7, rules
            bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
            assert not bad, bad
            active = [(r["name"], r["state"]) for r in rules if r.get("state") != "inactive"]
            assert not active, active
            return f"{len(rules)} rules healthy, none pending or firing"
        check("the alerting rules load and evaluate", rules)
    finally:
        for p in reversed(started):
            p.stop()
    if not all(results) or len(results) != 4:
        print(f"metrics: {results.count(True)} of 4 checks passed")
        sys.exit(1)


if __name__ == "__main__":
    main()
