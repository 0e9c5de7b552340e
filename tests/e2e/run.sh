#!/usr/bin/env bash
# tests/e2e/run.sh — envlink's end-to-end tier: the e2e suite and the Helm chart tests
# against a real kube-apiserver 1.20.2 (tests/e2e/testbed.sh), from a clean clone.
#
#   bash tests/e2e/run.sh
#
# 1. Setup, with the network: apt packages and the deb-src entry (`testbed.sh install`,
#    needs root), kubectl if missing, Python packages, helm-sdkpy (`helm.py setup`).
# 2. Build: kube-apiserver (`testbed.sh build`: cached in ~/.cache/envlink-testbed; the
#    first build takes ~4-8 minutes) and envlink (`cargo build --locked`, the dev profile
#    `cargo test` has already built).
# 3. Inside ONE loopback-only network namespace (`testbed.sh netns-run`): start etcd and
#    kube-apiserver with fresh state, run tests/e2e/e2e.py, tests/helm/test_chart.py and
#    tests/helm/render_deploy.py --check, stop everything.
#
# Exit status non-zero when anything fails. When the API server cannot be built or started
# this FAILS with a message — it never skips. Closing line: `N passed, M failed` over all
# three (render_deploy --check counts as one test).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd -P)
TESTBED="$ROOT/tests/e2e/testbed.sh"
ENVLINK_BIN="$ROOT/target/debug/envlink"

stage() { printf '\n==== e2e: %s ====\n' "$*"; }
die() {
  printf '\ne2e: ERROR: %s\n' "$*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

# ---------------------------------------------------------------------------------------
# Inside the network namespace (called by the outer part below through netns-run)
# ---------------------------------------------------------------------------------------
inside() {
  # Only loopback exists here; make sure no client tries a proxy.
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

  local st
  st=$(mktemp -d "${TMPDIR:-/tmp}/envlink-e2e-state.XXXXXX")
  # shellcheck disable=SC2064
  trap "bash '$TESTBED' stop '$st' >/dev/null 2>&1 || true" EXIT

  stage "start etcd + kube-apiserver (state in $st)"
  bash "$TESTBED" start "$st" >/dev/null \
    || die "kube-apiserver could not be started (see the testbed messages above; logs in $st)"
  export KUBECONFIG="$st/kubeconfig" ENVLINK_STATE="$st" ENVLINK_BIN
  kubectl version -o json >/dev/null 2>&1 || die "kubectl cannot talk to the test API server"

  local out="$st/outputs"
  mkdir -p "$out"
  local -a names=() results=()
  local total_pass=0 total_fail=0

  # run NAME CMD...: runs a suite, keeps its output, adds up its closing line.
  run() {
    local name=$1 rc=0 line p f
    shift
    stage "$name"
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

  run e2e python3 "$ROOT/tests/e2e/e2e.py"
  run chart python3 "$ROOT/tests/helm/test_chart.py"
  # render_deploy --check is one test: deploy/envlink.yaml in sync with the chart
  local rc=0
  stage "render_deploy --check"
  python3 "$ROOT/tests/helm/render_deploy.py" --check 2>&1 | tee "$out/render.log" || rc=${PIPESTATUS[0]}
  names+=("render_deploy --check")
  if ((rc == 0)); then
    results+=("ok"); total_pass=$((total_pass + 1))
  else
    results+=("FAIL (exit $rc)"); total_fail=$((total_fail + 1))
  fi

  stage "stop"
  bash "$TESTBED" stop "$st" >/dev/null 2>&1 || echo "e2e: warning: testbed stop failed" >&2
  trap - EXIT
  if ((total_fail == 0)); then
    rm -rf "$st"
  else
    echo "e2e: API server/etcd logs and suite outputs kept in $st"
  fi

  stage "summary"
  [[ -n "${E2E_T0:-}" ]] && echo "e2e: total $(($(date +%s) - E2E_T0))s (setup and builds included)"
  local i
  for i in "${!names[@]}"; do
    printf '  %-24s %s\n' "${names[$i]}" "${results[$i]}"
  done
  echo "$total_pass passed, $total_fail failed"
  ((total_fail == 0))
}

if [[ "${1:-}" == "--in-netns" ]]; then
  inside
  exit $?
fi

# ---------------------------------------------------------------------------------------
# Outside: setup and builds (network available), then one netns-run
# ---------------------------------------------------------------------------------------
t_start=$SECONDS
export E2E_T0
E2E_T0=$(date +%s)

stage "install (apt: go, etcd, reflect2, iproute2, util-linux, openssl, curl; deb-src)"
if [[ $EUID -eq 0 ]]; then
  bash "$TESTBED" install || die "testbed.sh install failed"
elif command -v sudo >/dev/null 2>&1; then
  sudo bash "$TESTBED" install || die "testbed.sh install failed"
else
  die "testbed.sh install needs root (apt-get)"
fi
if ! command -v kubectl >/dev/null 2>&1; then
  # Debian's client (1.20) works as well as the 1.32 one the machines usually have.
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
python3 "$ROOT/tests/helm/helm.py" setup || die "helm.py setup (helm-sdkpy) failed"

stage "build kube-apiserver 1.20.2 (cached; first build ~4-8 min)"
bash "$TESTBED" build \
  || die "kube-apiserver 1.20.2 could not be built (see above): the e2e tier cannot run, failing"

stage "build envlink (cargo build --locked)"
cargo build --locked || die "cargo build failed"
[[ -x "$ENVLINK_BIN" ]] || die "$ENVLINK_BIN missing after cargo build"

stage "setup and builds took $((SECONDS - t_start))s; entering a loopback-only network namespace"
exec bash "$TESTBED" netns-run bash "$ROOT/tests/e2e/run.sh" --in-netns
