#!/usr/bin/env python3
"""Renders deploy/envlink.yaml (plain manifests for users without Helm) from charts/envlink.

    python3 tests/helm/render_deploy.py          # rewrite deploy/envlink.yaml
    python3 tests/helm/render_deploy.py --check  # exit 1 if it is out of date

Rendering is `helm template envlink charts/envlink --namespace envlink` with the real Helm
CLI (helm.py; built by `tests/e2e/testbed.sh build-helm`): client-only, no cluster needed,
and the same manifest `helm install` would apply (hooks: the chart has none; --no-hooks
keeps it that way for deploy/).

Values used (everything else is the chart's defaults):
  tls.generate=false   no chart-generated certificate: it would differ on every render and
                       must never be shared between clusters; deploy/gen-certs.sh makes one
                       per cluster. So the output is deterministic and compared exactly.
Post-processing, nothing else:
  - none for the PodDisruptionBudget: rendered for a current Kubernetes (--kube-version
    below, 1.21+), the chart itself chooses policy/v1 (v1beta1 is gone since 1.25); the
    script checks there is exactly one policy/v1 PodDisruptionBudget.
  - `app.kubernetes.io/managed-by: Helm` becomes `kubectl`;
  - a header.
"""

from __future__ import annotations

import argparse
import difflib
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
# The Kubernetes version deploy/ is rendered for (any 1.21+ gives the same output).
KUBE_VERSION = "1.37.2"

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


def render() -> str:
    manifest = helm.Helm(NAMESPACE).template(RELEASE, str(CHART), VALUES, "--no-hooks",
                                             "--kube-version", KUBE_VERSION)
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
