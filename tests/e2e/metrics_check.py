"""capsign's /metrics, read by the official Prometheus client library's OpenMetrics parser,
after the SDK checks have run against the same capsign. Environment: CAPSIGN_METRICS (the
metrics URL). Prints PASS/FAIL lines; exit 1 on a failure."""

import os
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_families

LABEL = "metrics"


def main():
    url = os.environ["CAPSIGN_METRICS"]
    # Prometheus's own Accept header: OpenMetrics first.
    accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=10) as res:
        ctype = res.headers.get("content-type", "")
        text = res.read().decode()
    # A scraper that asks for nothing gets the Prometheus text format.
    with urllib.request.urlopen(url, timeout=10) as res:
        plain_ctype = res.headers.get("content-type", "")
        plain = res.read().decode()
    try:
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert ctype.startswith("application/openmetrics-text"), ctype
        assert all(name.startswith(("capsign_", "process_")) for name in families), sorted(families)
        issued = sum(s.value for s in families["capsign_credentials_issued"].samples
                     if s.name.endswith("_total"))
        assert issued > 0, "no credential counted after the SDK checks"
        requests = families["capsign_http_requests"]
        routes = {s.labels["route"] for s in requests.samples}
        assert routes <= {"auth", "preflight", "healthz", "login", "logout", "demo_page", "other"}, routes
        assert plain_ctype.startswith("text/plain; version=0.0.4"), plain_ctype
        plain_families = {f.name for f in text_families(plain)}
        assert plain_families == set(families), plain_families ^ set(families)
        print(f"PASS {LABEL}: both expositions parse with prometheus_client's OpenMetrics and text "
              f"parsers ({len(families)} families, {int(issued)} credentials counted)")
    except Exception as e:  # noqa: BLE001 - any failure is the check's failure
        print(f"FAIL {LABEL}: {e!r}")
        sys.exit(1)


if __name__ == "__main__":
    main()
