#!/usr/bin/env python3
"""Renders deploy/monitoring/ (alert rules and dashboard for users without Helm) from
charts/envlink, or checks that it is in sync.

    python3 tests/prometheus/render_monitoring.py          # rewrite deploy/monitoring/
    python3 tests/prometheus/render_monitoring.py --check  # exit 1 if it is out of date

Needs a Helm CLI (`$HELM`, else `helm` on PATH; tests/prometheus/run.sh builds one) for a
client-side `helm template`: no API server is involved.

- deploy/monitoring/prometheus-rules.yaml: the `spec` of the chart's PrometheusRule rendered
  with the values deploy/envlink.yaml is rendered with (release and namespace "envlink",
  tls.generate=false) plus metrics.prometheusRule.enabled=true, as a plain Prometheus rule
  file (`groups:`), under a header. The chart's one definition (templates/_monitoring.tpl)
  is the source of both, so they cannot drift.
- deploy/monitoring/envlink-dashboard.json: a byte-for-byte copy of
  charts/envlink/dashboards/envlink.json. The check also renders the chart's dashboard
  ConfigMap and compares its envlink.json with the file, so the template embeds it intact.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "envlink"
DASHBOARD = CHART / "dashboards" / "envlink.json"
OUT = ROOT / "deploy" / "monitoring"
RULES_OUT = OUT / "prometheus-rules.yaml"
DASHBOARD_OUT = OUT / "envlink-dashboard.json"
RELEASE = NAMESPACE = "envlink"
# Those of render_deploy.py (deploy/envlink.yaml), plus the switches of what is rendered here.
BASE = {"tls": {"generate": False},
        "metrics": {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}}
# Other values the rules depend on, for `--variants` (merged over BASE): each rendering must
# pass `promtool check rules` too, so a template branch the defaults do not take cannot ship
# broken.
VARIANTS = {
    "chart-generated-certificate": {"tls": {"generate": True}},
    "cert-manager-and-selector": {
        "certManager": {"enabled": True},
        "metrics": {"prometheusRule": {"selector": 'job="envlink",namespace="envlink"'}},
    },
    "other-thresholds": {
        "requestTimeout": "20s",
        "webhook": {"validating": {"enabled": False}, "mutating": {"timeoutSeconds": 30}},
        "metrics": {"prometheusRule": {
            "certExpiryWarningDays": 14.5, "certExpiryCriticalDays": 2,
            "noReadyReplicaFor": "1h30m", "httpErrorsPerSecond": 0, "latencyTimeoutRatio": 0.9,
            "catalogStaleSeconds": 60, "denialsPerSecond": 1.5, "denialsSpikeFactor": 10}},
    },
}

HEADER = """\
# envlink's alert rules as a plain Prometheus rule file (rule_files: in prometheus.yml).
#
# GENERATED from charts/envlink (templates/_monitoring.tpl) with its default values
# (release "envlink", namespace "envlink", tls.generate=false) by
# tests/prometheus/render_monitoring.py. Do not edit: change the chart and re-render.
#
# The expressions select envlink's series with job="envlink": change that if your scrape job
# has another name (the chart's metrics.prometheusRule.selector). Thresholds are the chart's
# metrics.prometheusRule values; see the chart README.
"""


def helm_bin() -> str:
    helm = os.environ.get("HELM") or shutil.which("helm")
    if not helm:
        raise SystemExit("render_monitoring.py: no Helm CLI ($HELM or helm on PATH); "
                         "tests/prometheus/run.sh builds one")
    return helm


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def template(show_only: str, values: dict | None = None) -> str:
    cmd = [helm_bin(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
           "--show-only", show_only]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(merge(BASE, values or {}), f)  # JSON is YAML
        f.flush()
        cmd += ["-f", f.name]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"helm template failed ({' '.join(cmd)}):\n{res.stderr}")
    return res.stdout


def rules_file(values: dict | None = None) -> str:
    """The PrometheusRule's spec, de-indented into a rule file."""
    lines = template("templates/prometheusrule.yaml", values).splitlines()
    try:
        start = lines.index("spec:") + 1
    except ValueError:
        raise SystemExit("render_monitoring.py: the rendered PrometheusRule has no `spec:` line")
    body = []
    for line in lines[start:]:
        if line and not line.startswith("  "):
            raise SystemExit(f"render_monitoring.py: unexpected line after spec: {line!r}")
        body.append(line[2:])
    text = "\n".join(body).strip("\n") + "\n"
    if not text.startswith("groups:\n"):
        raise SystemExit("render_monitoring.py: the PrometheusRule's spec does not start with groups:")
    return HEADER + text


def dashboard_in_configmap() -> str:
    """The envlink.json key of the rendered dashboard ConfigMap."""
    import yaml  # PyYAML; run.sh installs it

    docs = [d for d in yaml.safe_load_all(template("templates/grafana-dashboard.yaml")) if d]
    if len(docs) != 1 or docs[0].get("kind") != "ConfigMap":
        raise SystemExit("render_monitoring.py: expected one ConfigMap from grafana-dashboard.yaml")
    cm = docs[0]
    labels = cm["metadata"].get("labels", {})
    if labels.get("grafana_dashboard") != "1":
        raise SystemExit(f"render_monitoring.py: the dashboard ConfigMap lacks the sidecar label: {labels}")
    return cm["data"]["envlink.json"]


def compare(path: Path, want: str) -> bool:
    have = path.read_text() if path.exists() else ""
    if have == want:
        print(f"{path.relative_to(ROOT)} is in sync with the chart")
        return True
    sys.stdout.writelines(difflib.unified_diff(
        have.splitlines(True), want.splitlines(True),
        str(path.relative_to(ROOT)), "rendered from charts/envlink"))
    print(f"{path.relative_to(ROOT)} is OUT OF DATE: run tests/prometheus/render_monitoring.py",
          file=sys.stderr)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--variants", type=Path, metavar="DIR",
                    help="only write the rules rendered with other values (VARIANTS) into DIR")
    a = ap.parse_args()
    if a.variants:
        a.variants.mkdir(parents=True, exist_ok=True)
        for name, values in VARIANTS.items():
            (a.variants / f"{name}.yaml").write_text(rules_file(values))
            print(f"wrote {a.variants / name}.yaml")
        return 0
    rules = rules_file()
    dashboard = DASHBOARD.read_text()
    json.loads(dashboard)  # a dashboard that does not parse fails here, not in Grafana
    embedded = dashboard_in_configmap()
    if json.loads(embedded) != json.loads(dashboard):
        print("the rendered dashboard ConfigMap does not carry dashboards/envlink.json",
              file=sys.stderr)
        return 1
    if a.check:
        ok = compare(RULES_OUT, rules)
        ok = compare(DASHBOARD_OUT, dashboard) and ok
        return 0 if ok else 1
    OUT.mkdir(parents=True, exist_ok=True)
    RULES_OUT.write_text(rules)
    DASHBOARD_OUT.write_text(dashboard)
    print(f"wrote {RULES_OUT.relative_to(ROOT)} and {DASHBOARD_OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
