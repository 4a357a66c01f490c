"""The Kubernetes manifest of deploy/ applies as written: it validates with kubernetes-validate
--strict against every Kubernetes version its header names, meets the Pod Security
"restricted" profile, references only what it holds or its documented steps create, and says
what docs/deploy.md promises: probes on /healthz and /readyz, a preStop wait, a grace period
covering preStop, the drain delay and the grace, secrets from a Secret, a PodDisruptionBudget,
spread over nodes and zones, no service account token, a non-root read-only container. Prints PASS/FAIL; exit 1 on a
failure."""

import os
import re
import subprocess
import sys

import yaml

LABEL = "deploy"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def seconds(text):
    m = re.fullmatch(r"(\d+)s", text)
    assert m, text
    return int(m.group(1))


def validate(path, versions):
    """kubernetes-validate --strict (the PyPI package, with the schemas of each release)."""
    exe = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    for version in versions:
        out = subprocess.run([exe, "--strict", "--quiet", "-k", version, path],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"Kubernetes {version}: {out.stdout}{out.stderr}"


def restricted(pod, c):
    """The Pod Security Standards' "restricted" profile, as it applies to this pod."""
    sc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    assert sc.get("runAsNonRoot") is True, "runAsNonRoot"
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile"
    assert csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation"
    assert csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities"
    assert not any("hostPath" in v for v in pod.get("volumes", [])), "hostPath"
    assert not pod.get("hostNetwork") and not pod.get("hostPID"), "host namespaces"


def main():
    try:
        path = os.path.join(ROOT, "deploy", "kubernetes.yaml")
        with open(path) as f:
            text = f.read()
        docs = [d for d in yaml.safe_load_all(text) if d]
        kinds = {d["kind"]: d for d in docs}
        assert set(kinds) == {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service"}, sorted(kinds)
        # The versions the header names, each validated; the first is the minimum.
        m = re.search(r"Kubernetes (\d+\.\d+) or later", text)
        named = re.search(r"--strict against ([\d., and]+)", text.replace("\n#", ""))
        versions = re.findall(r"\d+\.\d+", named.group(1))
        assert m and versions and versions[0] == m.group(1), (m, versions)
        validate(path, versions)
        pod = kinds["Deployment"]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        restricted(pod, c)
        assert pod.get("automountServiceAccountToken") is False, "service account token mounted"
        keys = {t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])}
        assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, keys
        labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
        assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert kinds["Service"]["spec"]["selector"].items() <= labels.items()
        # Everything referenced exists: the ConfigMap here (holding the example rules, which
        # capsign's tests parse), the Secret by the header's own command, with every key used.
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"], volume
        with open(os.path.join(ROOT, "examples", "rules.toml")) as f:
            assert kinds["ConfigMap"]["data"]["rules.toml"] == f.read(), "the ConfigMap's rules differ from examples/rules.toml"
        mount = next(v["mountPath"] for v in c["volumeMounts"] if v["name"] == "rules")
        env = {e["name"]: e for e in c["env"]}
        assert env["CAPSIGN_RULES"]["value"] == f"{mount}/rules.toml"
        created = re.search(r"kubectl create secret generic (\S+)((?:.|\n)*?)\n#\s*\d\.", text)
        assert created, "no kubectl create secret step"
        for secret in ("ABLY_API_KEY", "CAPSIGN_COOKIE_KEY", "CAPSIGN_SESSION_SECRET"):
            ref = env[secret]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == created.group(1), ref
            assert f"--from-literal={ref['key']}=" in created.group(2), ref
        assert "REGISTRY/" in c["image"] and "docker build -t REGISTRY/" in text, c["image"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = seconds(env["CAPSIGN_SHUTDOWN_DELAY"]["value"]) + seconds(env["CAPSIGN_SHUTDOWN_GRACE"]["value"])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain, (pre_stop, drain)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        print(f"PASS {LABEL}: deploy/kubernetes.yaml validates (--strict) for Kubernetes "
              f"{', '.join(versions)}, meets Pod Security \"restricted\", references only what it "
              f"or its steps create; preStop {pre_stop} s, drain {drain} s within "
              f"{pod['terminationGracePeriodSeconds']} s")
    except Exception as e:  # noqa: BLE001 - any failure is the check's failure
        print(f"FAIL {LABEL}: {e!r}")
        sys.exit(1)


if __name__ == "__main__":
    main()
