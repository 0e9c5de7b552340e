#!/usr/bin/env python3
"""Renders deploy/envlink.yaml (plain manifests for users without Helm) from charts/envlink.

    KUBECONFIG=... python3 tests/helm/render_deploy.py          # rewrite deploy/envlink.yaml
    KUBECONFIG=... python3 tests/helm/render_deploy.py --check  # exit 1 if it is out of date

Rendering uses the real Helm engine (helm.py): helm-sdkpy has no client-only `template`, so
the chart is installed as release `envlink` into namespace `envlink` of the (test) API
server named by KUBECONFIG, the manifest Helm stored is read back, and the release is
uninstalled again. Run it against a throw-away API server (tests/e2e/testbed.sh): the
install registers webhooks, briefly.

Values used (everything else is the chart's defaults):
  tls.generate=false   no chart-generated certificate: it would differ on every render and
                       must never be shared between clusters; deploy/gen-certs.sh makes one
                       per cluster. So the output is deterministic and compared exactly.
Post-processing, nothing else:
  - the PodDisruptionBudget is written as policy/v1: the manifests are for current clusters
    (1.21+; v1beta1 is gone since 1.25), while the test API server is 1.20, where Helm can
    only install (and so render) the chart's policy/v1beta1 variant. The spec the chart
    renders (minAvailable, selector) is the same in both versions.
  - `app.kubernetes.io/managed-by: Helm` becomes `kubectl`;
  - a header.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helm  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "envlink"
OUT = ROOT / "deploy" / "envlink.yaml"
RELEASE = "envlink"
NAMESPACE = "envlink"
VALUES = {"tls": {"generate": False}}
PDB_V1BETA1 = re.compile(r"(# policy/v1 arrived[^\n]*\n)?apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\n")

HEADER = """\
# envlink: plain Kubernetes manifests for clusters without Helm.
#
# GENERATED from charts/envlink with its default values (release "envlink", namespace
# "envlink", tls.generate=false; PodDisruptionBudget as policy/v1, for Kubernetes 1.21+) by
# tests/helm/render_deploy.py. Do not edit: change the chart and re-render.
#
# Contains no certificate: create the TLS Secret and patch the webhooks' caBundle with
# deploy/gen-certs.sh (see deploy/README.md).
"""


def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], check=check, capture_output=True, text=True)


def render() -> str:
    # The namespace is left in place afterwards: the test API server has no namespace
    # controller, so a deleted namespace would stay Terminating for good.
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        kubectl("create", "namespace", NAMESPACE)
    # On Kubernetes < 1.21 the chart's exclusion of its own namespace needs this label.
    kubectl("label", "--overwrite", "namespace", NAMESPACE, "envlink.io/ignore=true")
    with helm.Helm(NAMESPACE) as h:
        try:
            h.install(RELEASE, str(CHART), VALUES)
            manifest = h.get_manifest(RELEASE)
        finally:
            try:
                h.uninstall(RELEASE)
            except helm.ReleaseNotFound:
                pass
    manifest = PDB_V1BETA1.sub("apiVersion: policy/v1\nkind: PodDisruptionBudget\n", manifest)
    if manifest.count("apiVersion: policy/v1\nkind: PodDisruptionBudget\n") != 1:
        raise SystemExit("render_deploy.py: expected exactly one policy/v1 PodDisruptionBudget")
    manifest = manifest.replace("app.kubernetes.io/managed-by: Helm",
                                "app.kubernetes.io/managed-by: kubectl")
    return HEADER + manifest.lstrip("\n").rstrip("\n") + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with deploy/envlink.yaml instead of writing it")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if not os.environ.get("KUBECONFIG"):
        print("render_deploy.py: KUBECONFIG must name a (test) API server", file=sys.stderr)
        return 2
    text = render()
    if a.check:
        current = a.out.read_text() if a.out.exists() else ""
        if current == text:
            print(f"{a.out.relative_to(ROOT)} is in sync with the chart")
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(True), text.splitlines(True),
            str(a.out.relative_to(ROOT)), "rendered from charts/envlink"))
        print(f"{a.out.relative_to(ROOT)} is OUT OF DATE: run tests/helm/render_deploy.py",
              file=sys.stderr)
        return 1
    a.out.write_text(text)
    print(f"wrote {a.out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
