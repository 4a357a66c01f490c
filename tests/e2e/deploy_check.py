"""The Kubernetes manifest of deploy/ parses, and says what docs/deploy.md promises: probes on
/healthz and /readyz, a preStop wait, a grace period covering preStop, the drain delay and the
grace, secrets from a Secret, a non-root read-only container. Prints PASS/FAIL; exit 1 on a
failure."""

import os
import re
import sys

import yaml

LABEL = "deploy"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def seconds(text):
    m = re.fullmatch(r"(\d+)s", text)
    assert m, text
    return int(m.group(1))


def main():
    try:
        with open(os.path.join(ROOT, "deploy", "kubernetes.yaml")) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        kinds = {d["kind"]: d for d in docs}
        assert set(kinds) == {"Deployment", "Service"}, sorted(kinds)
        pod = kinds["Deployment"]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        env = {e["name"]: e for e in c["env"]}
        for secret in ("ABLY_API_KEY", "CAPSIGN_COOKIE_KEY", "CAPSIGN_SESSION_SECRET"):
            assert "secretKeyRef" in env[secret]["valueFrom"], secret
        pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = seconds(env["CAPSIGN_SHUTDOWN_DELAY"]["value"]) + seconds(env["CAPSIGN_SHUTDOWN_GRACE"]["value"])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain, (pre_stop, drain)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        print(f"PASS {LABEL}: deploy/kubernetes.yaml parses; probes, preStop {pre_stop} s, drain {drain} s "
              f"within a grace period of {pod['terminationGracePeriodSeconds']} s")
    except Exception as e:  # noqa: BLE001 - any failure is the check's failure
        print(f"FAIL {LABEL}: {e!r}")
        sys.exit(1)


if __name__ == "__main__":
    main()
