#!/usr/bin/env bash
# tests/e2e/run.sh — envlink's end-to-end tier: the e2e suite and the Helm chart tests
# against real kube-apiservers (tests/e2e/testbed.sh), from a clean clone:
#
#   1.20      kube-apiserver v1.20.2 (Debian's source, Go 1.19)           e2e + chart + render
#   current   kube-apiserver v1.37.x (Go module proxy, the machine's Go)   e2e + chart + render
#   ipv6      the current one, single-stack IPv6 Services (fd00:10:96::/108, bound to ::1)  e2e
#
#   bash tests/e2e/run.sh                      # all three
#   ENVLINK_E2E_RUNS="current" bash tests/e2e/run.sh   # a subset (local use; CI runs all)
#   ENVLINK_E2E_SUITES="e2e" ENVLINK_E2E_ONLY=burst ENVLINK_E2E_RUNS=current bash tests/e2e/run.sh
#       # local use: only the named suites (audit e2e devices prometheus chart render), and in
#       # e2e.py only the scenarios whose name contains ENVLINK_E2E_ONLY
#
# 1. Setup, with the network: apt packages and the deb-src entry (`testbed.sh install`,
#    needs root), kubectl if missing, Python packages.
# 2. Builds, each cached in ~/.cache/envlink-testbed (a fresh machine builds them; any failure
#    fails the run with the reason): kube-apiserver 1.20.2, Kubernetes current
#    (kube-apiserver, kubectl, etcd), the helm CLI, and envlink (`cargo build --locked`).
# 3. For each run, inside its OWN loopback-only network namespace (`testbed.sh netns-run`):
#    start etcd and kube-apiserver with fresh state, run tests/e2e/e2e.py,
#    tests/helm/test_chart.py and tests/helm/render_deploy.py --check, stop everything, and
#    print `kube-apiserver vX.Y.Z: N passed, M failed`.
#
# Exit status non-zero when anything fails. When an API server cannot be built or started
# this FAILS with a message — it never skips. The last lines are one summary line per run
# and the total.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd -P)
TESTBED="$ROOT/tests/e2e/testbed.sh"
ENVLINK_BIN="$ROOT/target/debug/envlink"
read -r -a RUNS <<<"${ENVLINK_E2E_RUNS:-1.20 current ipv6}"

# wanted SUITE: whether ENVLINK_E2E_SUITES (default: every suite) names it
wanted() { [[ -z "${ENVLINK_E2E_SUITES:-}" || " $ENVLINK_E2E_SUITES " == *" $1 "* ]]; }
stage() { printf '\n==== e2e: %s ====\n' "$*"; }
die() {
  printf '\ne2e: ERROR: %s\n' "$*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

# ---------------------------------------------------------------------------------------
# Inside a network namespace: one run (called by the outer part through netns-run)
# ---------------------------------------------------------------------------------------
inside() {
  local run=$1 label
  # Only loopback exists here; make sure no client tries a proxy.
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
  case "$run" in
    1.20) export ENVLINK_K8S=1.20 ENVLINK_TESTBED_IP_FAMILY=ipv4 ;;
    current) export ENVLINK_K8S=current ENVLINK_TESTBED_IP_FAMILY=ipv4 ;;
    ipv6) export ENVLINK_K8S=current ENVLINK_TESTBED_IP_FAMILY=ipv6 ;;
    *) die "unknown run '$run' (expected 1.20, current or ipv6)" ;;
  esac

  local st
  st=$(mktemp -d "${TMPDIR:-/tmp}/envlink-e2e-$run.XXXXXX")
  # shellcheck disable=SC2064
  trap "bash '$TESTBED' stop '$st' >/dev/null 2>&1 || true" EXIT

  stage "[$run] start etcd + kube-apiserver (state in $st)"
  bash "$TESTBED" start "$st" >/dev/null \
    || die "[$run] kube-apiserver could not be started (see the testbed messages above; logs in $st)"
  # KUBECTL, KUBE_VERSION, IP_FAMILY, APISERVER_URL, ...
  # shellcheck disable=SC1091
  source "$st/env"
  # The kubectl of the server's version (the machine's for 1.20): first on PATH for the chart
  # tests and deploy/gen-certs.sh, and named by $KUBECTL for e2e.py.
  export KUBECONFIG ENVLINK_STATE="$st" ENVLINK_BIN KUBECTL KUBE_VERSION
  export ENVLINK_E2E_IP_FAMILY=$IP_FAMILY
  # A directory holding only that kubectl (prepending dirname "$KUBECTL" could be /usr/bin and
  # change which python3 runs the suites).
  mkdir -p "$st/bin"
  ln -sf "$KUBECTL" "$st/bin/kubectl"
  export PATH="$st/bin:$PATH"
  label="kube-apiserver v$KUBE_VERSION"
  [[ "$IP_FAMILY" == ipv6 ]] && label+=" (IPv6)"
  "$KUBECTL" version -o json >/dev/null 2>&1 || die "[$run] kubectl cannot talk to the test API server"
  echo "e2e: $label at $APISERVER_URL, kubectl $KUBECTL"

  local out="$st/outputs"
  mkdir -p "$out"
  local -a names=() results=()
  local total_pass=0 total_fail=0

  # suite NAME CMD...: runs a suite, keeps its output, adds up its closing line.
  suite() {
    local name=$1 rc=0 line p f
    shift
    wanted "$name" || return 0
    stage "[$run] $name"
    "$@" 2>&1 | tee "$out/$name.log" || rc=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out/$name.log" | tail -n1 || true)
    if [[ -n "$line" ]]; then
      p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")
      f=$(sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")
    else
      p=0 f=1   # crashed before printing its summary
    fi
    ((rc != 0 && f == 0)) && f=1   # non-zero exit always counts as a failure
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    names+=("$name")
    results+=("exit $rc: ${line:-no summary line}")
  }

  # `envlink audit` first: it plants Pods while no envlink webhook is registered (it checks).
  # It needs no particular version or IP family; once per version is enough.
  if [[ "$IP_FAMILY" == ipv4 ]]; then
    suite audit python3 "$ROOT/tests/e2e/audit_e2e.py"
  fi
  suite e2e python3 "$ROOT/tests/e2e/e2e.py"
  # Device packs through the API server, DRA (resource.k8s.io/v1) and the native
  # ValidatingAdmissionPolicy (v1 since 1.30): the current server only.
  if [[ "$run" == current ]]; then
    suite devices python3 "$ROOT/tests/e2e/devices_e2e.py"
    # The alert rules and dashboard queries against a real Prometheus scraping envlink
    # instances that watch this API server (tests/prometheus/run.sh --live).
    suite prometheus bash "$ROOT/tests/prometheus/run.sh" --live
  fi
  # The chart does not depend on the IP family: the IPv6 run is for the e2e scenarios.
  if [[ "$IP_FAMILY" == ipv4 ]]; then
    suite chart python3 "$ROOT/tests/helm/test_chart.py"
    # render_deploy --check is one test: deploy/envlink.yaml in sync with the chart
    local rc=0
    if wanted render; then
      stage "[$run] render_deploy --check"
      python3 "$ROOT/tests/helm/render_deploy.py" --check 2>&1 | tee "$out/render.log" || rc=${PIPESTATUS[0]}
      names+=("render_deploy --check")
      if ((rc == 0)); then
        results+=("ok"); total_pass=$((total_pass + 1))
      else
        results+=("FAIL (exit $rc)"); total_fail=$((total_fail + 1))
      fi
    fi
  fi

  stage "[$run] stop"
  bash "$TESTBED" stop "$st" >/dev/null 2>&1 || echo "e2e: warning: testbed stop failed" >&2
  trap - EXIT
  if ((total_fail == 0)); then
    rm -rf "$st"
  else
    echo "e2e: API server/etcd logs and suite outputs kept in $st"
  fi

  stage "[$run] summary"
  local i
  for i in "${!names[@]}"; do
    printf '  %-24s %s\n' "${names[$i]}" "${results[$i]}"
  done
  # The line the outer part collects (and CI shows): one per run.
  echo "$label: $total_pass passed, $total_fail failed"
  ((total_fail == 0))
}

if [[ "${1:-}" == "--in-netns" ]]; then
  inside "${2:?run name}"
  exit $?
fi

# ---------------------------------------------------------------------------------------
# Outside: setup and builds (network available), then one netns-run per run
# ---------------------------------------------------------------------------------------
t_start=$SECONDS

# timed LABEL CMD...: runs CMD, records "LABEL: Ns" for the closing summary.
declare -a timings=()
timed() {
  local label=$1 t0=$SECONDS rc=0
  shift
  "$@" || rc=$?
  timings+=("$label: $((SECONDS - t0))s")
  return $rc
}

stage "install (apt: go 1.19, etcd, reflect2, iproute2, util-linux, openssl, curl; deb-src)"
if [[ $EUID -eq 0 ]]; then
  bash "$TESTBED" install || die "testbed.sh install failed"
elif command -v sudo >/dev/null 2>&1; then
  sudo bash "$TESTBED" install || die "testbed.sh install failed"
else
  die "testbed.sh install needs root (apt-get)"
fi
if ! command -v kubectl >/dev/null 2>&1; then
  # The 1.20 runs use the machine's kubectl; Debian's client (1.20) works as well as the 1.32
  # one the machines usually have. The current runs use the kubectl built with the server.
  stage "install kubectl (kubernetes-client)"
  if [[ $EUID -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubernetes-client || die "cannot install kubectl"
  else
    sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubernetes-client || die "cannot install kubectl"
  fi
fi

stage "python packages"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
if ! python3 -c 'import yaml, cryptography, jsonschema' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check pyyaml cryptography jsonschema \
    || die "pip install pyyaml cryptography jsonschema failed"
fi
python3 -c 'import yaml, cryptography' || die "python packages yaml/cryptography still missing"

stage "prometheus and promtool (for the live monitoring check of the current run)"
bash "$ROOT/tests/prometheus/run.sh" --setup || die "prometheus setup (tests/prometheus/run.sh --setup) failed"

stage "build kube-apiserver 1.20.2 (cached)"
ENVLINK_K8S=1.20 timed "kube-apiserver 1.20.2" bash "$TESTBED" build \
  || die "kube-apiserver 1.20.2 could not be built (see above): the e2e tier cannot run, failing"

stage "build current Kubernetes: kube-apiserver and kubectl (cached)"
ENVLINK_K8S=current timed "Kubernetes current (kube-apiserver+kubectl)" bash "$TESTBED" build \
  || die "the current Kubernetes could not be built (see above): the e2e tier cannot run, failing"

stage "build etcd for the current release (cached)"
timed "etcd" bash "$TESTBED" build-etcd || die "etcd could not be built (see above): the current runs cannot start, failing"

stage "build the helm CLI (cached)"
timed "helm" bash "$TESTBED" build-helm || die "helm could not be built (see above): the chart tests cannot run, failing"

stage "build envlink (cargo build --locked)"
timed "envlink (cargo build)" cargo build --locked || die "cargo build failed"
[[ -x "$ENVLINK_BIN" ]] || die "$ENVLINK_BIN missing after cargo build"

stage "setup and builds took $((SECONDS - t_start))s"
printf '  %s\n' "${timings[@]}"

# Each run in its own network namespace: fresh etcd, fresh API server, nothing shared.
declare -a lines=()
failed_runs=0
logdir=$(mktemp -d "${TMPDIR:-/tmp}/envlink-e2e-runs.XXXXXX")
for run in "${RUNS[@]}"; do
  t0=$SECONDS rc=0
  bash "$TESTBED" netns-run bash "$ROOT/tests/e2e/run.sh" --in-netns "$run" 2>&1 \
    | tee "$logdir/$run.log" || rc=${PIPESTATUS[0]}
  line=$(grep -E '^kube-apiserver v[^:]*: [0-9]+ passed, [0-9]+ failed$' "$logdir/$run.log" | tail -n1 || true)
  [[ -n "$line" ]] || line="run $run: 0 passed, 1 failed (no summary line; log $logdir/$run.log)"
  ((rc != 0)) && failed_runs=$((failed_runs + 1))
  lines+=("$line")
  timings+=("run $run (start, suites, stop): $((SECONDS - t0))s")
done

stage "summary (total $((SECONDS - t_start))s, setup and builds included)"
printf '  %s\n' "${timings[@]}"
printf '%s\n' "${lines[@]}"
if ((failed_runs == 0)); then
  rm -rf "$logdir"
  exit 0
fi
echo "e2e: $failed_runs of ${#RUNS[@]} runs failed (logs in $logdir)"
exit 1
