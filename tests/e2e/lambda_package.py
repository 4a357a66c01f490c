"""The Lambda deploy of docs/deploy.md and deploy/lambda/template.yaml, as written: the package
`cargo lambda build --output-format zip --include …` makes holds `bootstrap` and the rules file
at the path both set CAPSIGN_RULES to, the same bytes as examples/rules.toml; the SAM template
passes cfn-lint. Builds a debug x86_64 package (the docs' arm64 release packs the same way).
Usage: lambda_package.py CARGO_LAMBDA. Prints PASS/FAIL lines; exit 1 on a failure."""

import os
import re
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABEL = "lambda package"


def main():
    cargo_lambda = sys.argv[1]
    failed = False

    def check(name, fn):
        nonlocal failed
        try:
            print(f"PASS {LABEL}: {name} ({fn()})", flush=True)
        except Exception as e:  # noqa: BLE001 - any failure is the check's failure
            failed = True
            print(f"FAIL {LABEL}: {name}: {e}", flush=True)

    with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
        docs = f.read()
    with open(os.path.join(ROOT, "deploy", "lambda", "template.yaml")) as f:
        template = f.read()
    included = re.findall(r"--include (\S+)", docs)
    rules_at = set(re.findall(r"CAPSIGN_RULES=/var/task/(\S+)", docs))
    rules_at |= set(re.findall(r"CAPSIGN_RULES: /var/task/(\S+)", template))

    def package():
        assert included and len(set(included)) == 1, f"--include in docs/deploy.md: {included}"
        assert rules_at == set(included), f"CAPSIGN_RULES paths {rules_at} vs --include {included}"
        (path,) = rules_at
        out = tempfile.mkdtemp(prefix="capsign-lambda-package-")
        build = subprocess.run(
            [cargo_lambda, "lambda", "build", "-p", "capsign-lambda",
             "--output-format", "zip", "--include", path, "--lambda-dir", out],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
            # cargo-lambda finds zig (the ziglang package) through the venv's python.
            env=dict(os.environ, PATH=os.path.dirname(cargo_lambda) + os.pathsep + os.environ["PATH"]))
        assert build.returncode == 0, build.stderr[-2000:]
        with zipfile.ZipFile(os.path.join(out, "capsign-lambda", "bootstrap.zip")) as z:
            names = z.namelist()
            assert "bootstrap" in names, names
            assert path in names, f"{path} not in {names}"
            with open(os.path.join(ROOT, path), "rb") as f:
                assert z.read(path) == f.read(), f"{path} differs in the package"
        return f"bootstrap and {path}, which CAPSIGN_RULES=/var/task/{path} names in the docs and the template"
    check("the package holds the rules where CAPSIGN_RULES points", package)

    def lint():
        exe = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
        out = subprocess.run([exe, os.path.join(ROOT, "deploy", "lambda", "template.yaml")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        return "cfn-lint: no finding"
    check("the SAM template", lint)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
