#!/usr/bin/env bash
# tests/prometheus/run.sh — envlink's alert rules and Grafana dashboard, proven with a real
# Prometheus (Debian's `prometheus` package, which brings `promtool`).
#
#   bash tests/prometheus/run.sh            # setup, then every check below
#   bash tests/prometheus/run.sh --setup    # only install what --live needs (prometheus)
#   bash tests/prometheus/run.sh --live     # only the live check (5.): no setup and no
#                                           # network, for the e2e tier's loopback-only
#                                           # namespace (KUBECONFIG, ENVLINK_BIN from it)
#
# Setup (network, root for apt): `apt-get install prometheus` when prometheus or promtool
# is missing, PyYAML (pip) when missing, the Helm CLI of the e2e test bed (`testbed.sh
# build-helm`: built once from its Go module, cached in ~/.cache/envlink-testbed), and
# envlink (`cargo build --locked`, already built by `cargo test`).
#
# Checks:
#   1. helm lint of the chart with the PrometheusRule and dashboard enabled: no error, no
#      warning;
#   2. deploy/monitoring/ in sync with the chart (render_monitoring.py --check);
#   3. promtool check rules deploy/monitoring/prometheus-rules.yaml, and on the chart's rules
#      rendered with other values (cert-manager, a custom selector, other thresholds);
#   4. promtool test rules tests/prometheus/alerts_test.yaml (each alert fires and stays
#      silent on synthetic series);
#   5. live_check.py: envlink instances on 127.0.0.1 (`serve --dev`, or `--kubeconfig
#      $KUBECONFIG` when KUBECONFIG is set), scraped by a Prometheus started for the run;
#      every alert and dashboard expression runs against it and each selector and label must
#      match envlink's real series.
# Closing line `N passed, M failed` (live_check's checks counted one by one); exit 1 on any
# failure. A Prometheus that cannot be installed or started fails the run: never a skip.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd -P)
# The one Helm CLI of the project: the e2e test bed builds and caches it (`testbed.sh
# build-helm`, helm.sh/helm/v4/cmd/helm at the version it pins).
TESTBED="$ROOT/tests/e2e/testbed.sh"
export HELM="${HELM:-$(bash "$TESTBED" paths | sed -n 's/^HELM=//p')}"
export ENVLINK_BIN="${ENVLINK_BIN:-$ROOT/target/debug/envlink}"
RULES="$ROOT/deploy/monitoring/prometheus-rules.yaml"

stage() { printf '\n==== prometheus: %s ====\n' "$*"; }
die() {
  printf '\nprometheus: ERROR: %s\n' "$*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    die "need root for: $*"; fi
}

setup_prometheus() {
  stage "setup: prometheus and promtool (Debian's prometheus package)"
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    as_root apt-get update -q || die "apt-get update failed"
    # Only the binaries are used: the live check runs its own Prometheus on 127.0.0.1 with a
    # temporary config, whatever the package's service does.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
      || die "apt-get install prometheus failed"
  fi
  prometheus --version 2>&1 | head -n1
  promtool --version 2>&1 | head -n1
}

setup() {
  setup_prometheus

  stage "setup: python packages"
  command -v python3 >/dev/null 2>&1 || die "python3 not found"
  if ! python3 -c 'import yaml' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check pyyaml || die "pip install pyyaml failed"
  fi

  stage "setup: Helm CLI (tests/e2e/testbed.sh build-helm; cached)"
  if [[ ! -x "$HELM" ]] || ! "$HELM" version >/dev/null 2>&1; then
    bash "$TESTBED" build-helm || die "cannot build the Helm CLI (tests/e2e/testbed.sh build-helm)"
  fi
  echo "helm: $HELM ($("$HELM" version --short))"

  stage "setup: envlink"
  if [[ ! -x "$ENVLINK_BIN" ]]; then
    cargo build --locked || die "cargo build failed"
  fi
  [[ -x "$ENVLINK_BIN" ]] || die "$ENVLINK_BIN missing"
}

pass=0
fail=0
declare -a summary=()
# check NAME CMD...: one test; passes when CMD exits 0.
check() {
  local name=$1 rc=0
  shift
  stage "$name"
  "$@" || rc=$?
  if ((rc == 0)); then
    pass=$((pass + 1)); summary+=("ok    $name")
  else
    fail=$((fail + 1)); summary+=("FAIL  $name (exit $rc)")
  fi
}

# live: live_check.py, whose own `N passed, M failed` is added up check by check.
live() {
  local out rc=0 line p f
  stage "live check: every rule and dashboard expression against Prometheus scraping envlink"
  command -v prometheus >/dev/null 2>&1 || die "prometheus is not installed (run: bash tests/prometheus/run.sh --setup)"
  out=$(mktemp)
  python3 "$ROOT/tests/prometheus/live_check.py" 2>&1 | tee "$out" || rc=${PIPESTATUS[0]}
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n1 || true)
  rm -f "$out"
  if [[ -n "$line" ]]; then
    p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")
  else
    p=0 f=1
  fi
  ((rc != 0 && f == 0)) && f=1
  pass=$((pass + p)); fail=$((fail + f))
  summary+=("$( ((f == 0)) && echo 'ok  ' || echo 'FAIL')  live check ($line, exit $rc)")
}

lint() {
  local out
  out=$("$HELM" lint "$ROOT/charts/envlink" --set metrics.prometheusRule.enabled=true \
    --set metrics.grafanaDashboard.enabled=true --set metrics.serviceMonitor.enabled=true 2>&1) || {
    echo "$out"; return 1; }
  echo "$out"
  # Helm lint exits 0 on warnings; the chart must have none.
  if grep -E '^\[(WARNING|ERROR)\]' <<<"$out"; then return 1; fi
}

finish() {
  stage "summary"
  printf '  %s\n' "${summary[@]}"
  echo "$pass passed, $fail failed"
  ((fail == 0))
}

case "${1:-}" in
  --setup)
    setup_prometheus
    exit 0
    ;;
  --live)
    live
    finish
    exit $?
    ;;
  "")
    ;;
  *)
    echo "usage: $0 [--setup | --live]" >&2
    exit 2
    ;;
esac

setup
check "helm lint (PrometheusRule, dashboard and ServiceMonitor enabled)" lint
check "deploy/monitoring/ in sync with the chart" python3 "$ROOT/tests/prometheus/render_monitoring.py" --check
check "promtool check rules" promtool check rules "$RULES"
variants() {
  local dir
  dir=$(mktemp -d)
  python3 "$ROOT/tests/prometheus/render_monitoring.py" --variants "$dir" &&
    promtool check rules "$dir"/*.yaml
  local rc=$?
  rm -rf "$dir"
  return $rc
}
check "promtool check rules on the chart's rules with other values" variants
check "promtool test rules (alerts fire and stay silent on synthetic series)" \
  promtool test rules "$ROOT/tests/prometheus/alerts_test.yaml"
live
finish
