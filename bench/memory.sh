#!/usr/bin/env bash
# bench/memory.sh — resident memory of `envlink serve` with large Service catalogs.
#
# Usage: bench/memory.sh [--sizes 10000,100000] [--no-static] [--no-watch]
#                        [--create-via etcd|api] [-o FILE]
#
# Measures VmRSS (now) and VmHWM (peak) from /proc/PID/status of the release binary:
#   static        --services-file with N Services (namespaces of 1,000: ns-000, ns-001, ...),
#                 after readiness and 2 s of S1-like reviews (if oha is installed)
#   watch-list-MODE  --kubeconfig against the testbed's real kube-apiserver (1.20, or the
#                 current release with ENVLINK_K8S=current) holding N Services: envlink started
#                 after they exist (its first list carries them all), with --initial-list
#                 auto and paginated (LIST_MODES)
#   watch-events  the same, but envlink started before the first Service: every Service
#                 arrived as a watch event (measured at each size)
# The watch cases run inside `tests/e2e/testbed.sh netns-run` (loopback only). The API
# server is started with ENVLINK_TESTBED_APISERVER_ARGS="--service-cluster-ip-range=10.96.0.0/15
# --etcd-compaction-interval=30s": the default /16 has only 65,534 cluster IPs, and every
# create rewrites the IP allocation bitmap in etcd, so history is compacted often to stay far
# from etcd's 2 GB quota. Services are created by bench/create_services.py in 100 namespaces
# (N / 100 per namespace): --create-via api POSTs every one (10-15 min for 100,000 here);
# the default, etcd, POSTs one and writes copies of it into etcd (seconds; envlink still gets
# them from the API server's list and watch, the same objects; see create_services.py).
# Needs: testbed.sh install + build done (root), python3, curl, openssl, jq.
# Environment: ENVLINK_BIN (default: cargo build --release) and ENVLINK_REV (its commit, for
# the results), OHA, KEEP_WORKDIR=1.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=10000,100000
STATIC=1
WATCH=1
OUT=""
INNER=""
CREATE_METHOD=etcd

while (($#)); do
  case "$1" in
    --sizes) SIZES=$2; shift 2 ;;
    --no-static) STATIC=0; shift ;;
    --no-watch) WATCH=0; shift ;;
    --create-via) CREATE_METHOD=$2; shift 2 ;;
    -o) OUT=$2; shift 2 ;;
    --inner-watch) INNER=$2; shift 2 ;;   # internal: WORK dir, already inside the netns
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { printf '[memory] %s\n' "$*" >&2; }
die() { printf '[memory] ERROR: %s\n' "$*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

PIDS=()
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
kill_started() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
}

# start_envlink NAME ARGS... -> sets EPID, EMETRICS, EPORT (log in $WORK/envlink-NAME.log)
start_envlink() {
  local name=$1
  shift
  EPORT=$(free_port)
  EMETRICS=$(free_port)
  "$WORK/envlink" serve --listen "127.0.0.1:$EPORT" --metrics-listen "127.0.0.1:$EMETRICS" \
    --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" "$@" \
    </dev/null >"$WORK/envlink-$name.log" 2>&1 &
  EPID=$!
  PIDS+=("$EPID")
}

# wait_catalog PID METRICS_PORT SERVICES TIMEOUT [STALL]: until ready and the catalog holds
# SERVICES; prints "SECONDS COUNT". With STALL (seconds), also returns (with the count
# reached) when the count has not changed for that long, instead of failing at TIMEOUT.
wait_catalog() {
  local pid=$1 port=$2 want=$3 timeout=$4 stall=${5:-0} t0=$SECONDS have="" last="" since=$SECONDS
  while :; do
    kill -0 "$pid" 2>/dev/null || die "envlink (pid $pid) exited; see $WORK"
    have=$(curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null |
      awk '$1 == "envlink_catalog_services" {print $2}') || true
    have=${have%.*}
    if [[ -n "$have" && "$have" -ge "$want" ]] &&
       curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      echo "$((SECONDS - t0)) $have"
      return 0
    fi
    [[ "$have" == "$last" ]] || { last=$have; since=$SECONDS; }
    if ((stall > 0 && SECONDS - since >= stall)); then
      log "catalog stuck at ${have:-?} of $want Services for ${stall}s"
      echo "$((SECONDS - t0)) ${have:-0}"
      return 0
    fi
    ((SECONDS - t0 < timeout)) || die "catalog has ${have:-?} of $want Services after ${timeout}s"
    sleep 0.5
  done
}

# some reviews, so RSS includes what serving adds (buffers, per-thread allocator caches)
exercise() {
  local port=$1 ns=$2
  [[ -n "${OHA:-}" && -x "${OHA:-}" ]] || return 0
  python3 "$ROOT/bench/gen.py" review --namespace "$ns" \
    --services 'svc-00001, svc-00010, svc-00020, svc-00050, svc-00099' --out "$WORK/review-$ns.json"
  "$OHA" --no-tui --output-format json -z 2s -c 8 -m POST -H 'Content-Type: application/json' \
    -D "$WORK/review-$ns.json" --insecure "https://127.0.0.1:$port/mutate" >"$WORK/oha-exercise.json" 2>&1 || true
  jq -e '.statusCodeDistribution["200"] > 0' "$WORK/oha-exercise.json" >/dev/null 2>&1 ||
    log "warning: the exercise reviews did not get 200s"
}

# record SOURCE SERVICES PID [EXTRA_JSON]
record() {
  local source=$1 n=$2 pid=$3 extra=${4:-"{}"} rss hwm anon
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
  jq -cn --arg source "$source" --argjson n "$n" --argjson rss "$rss" --argjson hwm "$hwm" \
    --argjson anon "$anon" --argjson extra "$extra" \
    '{source: $source, services: $n, vmrss_kb: $rss, vmhwm_kb: $hwm, rss_anon_kb: $anon,
      vmrss_mb: ($rss / 1024 | . * 10 | round / 10), vmhwm_mb: ($hwm / 1024 | . * 10 | round / 10)} + $extra' \
    >>"$WORK/results.jsonl"
  log "$source $n Services: VmRSS $((rss / 1024)) MB, VmHWM $((hwm / 1024)) MB"
}

IFS=, read -r -a SIZE_LIST <<<"$SIZES"

# The container image's allocator settings (Dockerfile), unless the caller sets its own
# (MIMALLOC_PURGE_DELAY= empty, or other values, to measure mimalloc's defaults).
export MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY-0}
export MIMALLOC_ARENA_EAGER_COMMIT=${MIMALLOC_ARENA_EAGER_COMMIT-0}

# --- inside the network namespace: the watcher cases --------------------------------------
if [[ -n "$INNER" ]]; then
  WORK=$INNER
  # etcd's data on tmpfs: every Service create also rewrites the cluster-IP bitmap, and these
  # writes are serialised; with an fsync to disk each, creating 100,000 takes most of an hour.
  ST=$(mktemp -d /dev/shm/envlink-testbed.XXXXXX)
  trap 'kill_started; "$ROOT/tests/e2e/testbed.sh" stop "$ST" >/dev/null 2>&1 || true
        cp "$ST"/*.log "$WORK/" 2>/dev/null || true; rm -rf "$ST"' EXIT
  export ENVLINK_TESTBED_APISERVER_ARGS="--service-cluster-ip-range=10.96.0.0/15 --etcd-compaction-interval=30s"
  "$ROOT/tests/e2e/testbed.sh" start "$ST" >/dev/null
  # shellcheck disable=SC1091
  source "$ST/env"
  NS=100
  # envlink that sees every Service as a watch event
  start_envlink events --kubeconfig "$KUBECONFIG"
  EV_PID=$EPID
  EV_METRICS=$EMETRICS
  wait_catalog "$EV_PID" "$EV_METRICS" 1 60 >/dev/null || die "envlink did not start"
  done_per_ns=0
  for n in "${SIZE_LIST[@]}"; do
    per_ns=$((n / NS))
    log "creating Services up to $n ($NS namespaces x $per_ns) in the API server"
    t0=$SECONDS
    python3 "$ROOT/bench/create_services.py" --url "$APISERVER_URL" --token "$APISERVER_TOKEN" \
      --ca "$APISERVER_CA" --namespaces "$NS" --per-namespace "$per_ns" --first "$done_per_ns" \
      --method "$CREATE_METHOD" --etcd "http://127.0.0.1:$ETCD_PORT" --workers 3 --threads 4
    create_s=$((SECONDS - t0))
    done_per_ns=$per_ns
    total=$((NS * per_ns + 1))   # + default/kubernetes
    # A burst makes the 1.20 API server force-close watchers that fall behind ("Forcing
    # watcher close due to unresponsiveness"); envlink resumes from its last resourceVersion
    # (or re-lists on 410 Gone) and must still end up with every Service.
    read -r secs have < <(wait_catalog "$EV_PID" "$EV_METRICS" "$total" 600)
    record watch-events "$((NS * per_ns))" "$EV_PID" \
      "{\"create_seconds\": $create_s, \"catalog_services\": $have, \"expected\": $total, \"kubernetes\": \"${ENVLINK_K8S:-1.20}\"}"
    # LIST_MODES: the --initial-list modes to measure (default: auto, what envlink does by
    # default, and paginated). `streaming` needs an API server that serves streaming lists:
    # the current release on the testbed's etcd 3.6 does (auto streams there); 1.20 does not.
    for mode in ${LIST_MODES:-auto paginated}; do
      start_envlink "list-$mode-$n" --kubeconfig "$KUBECONFIG" --initial-list "$mode"
      read -r secs have < <(wait_catalog "$EPID" "$EMETRICS" "$total" 600)
      exercise "$EPORT" ns-000
      sleep 1
      record "watch-list-$mode" "$((NS * per_ns))" "$EPID" \
        "{\"ready_seconds\": $secs, \"catalog_services\": $have, \"expected\": $total, \"kubernetes\": \"${ENVLINK_K8S:-1.20}\"}"
      stop_pid "$EPID"
    done
  done
  exit 0
fi

# --- outside: setup, static cases, then the netns part -------------------------------------
command -v jq >/dev/null || die "jq not found"
OHA=${OHA:-$(command -v oha || { [[ -x "$HOME/.cache/oha-install/bin/oha" ]] && echo "$HOME/.cache/oha-install/bin/oha"; } || echo "$HOME/.cargo/bin/oha")}
[[ -x "$OHA" ]] || { log "oha not found: no reviews are sent before measuring"; OHA=""; }
export OHA
WORK=$(mktemp -d /tmp/envlink-memory.XXXXXX)
cleanup() {
  local rc=$?
  kill_started
  if [[ "${KEEP_WORKDIR:-0}" == 1 || $rc -ne 0 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "${ENVLINK_BIN:-}" ]]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet --bin envlink) || die "release build failed"
  ENVLINK_BIN=$ROOT/target/release/envlink
fi
cp "$ENVLINK_BIN" "$WORK/envlink"
"$ROOT/bench/certs.sh" "$WORK" || die "certificate generation failed"
: >"$WORK/results.jsonl"

if ((STATIC)); then
  for n in "${SIZE_LIST[@]}"; do
    python3 "$ROOT/bench/gen.py" catalog --namespaces ns --namespace-count "$(((n + 999) / 1000))" \
      --per-namespace "$((n < 1000 ? n : 1000))" --out "$WORK/services-$n.json"
    start_envlink "static-$n" --services-file "$WORK/services-$n.json"
    read -r secs _ < <(wait_catalog "$EPID" "$EMETRICS" "$((n + 1))" 300)
    exercise "$EPORT" ns-000
    sleep 1
    record static "$n" "$EPID" "{\"ready_seconds\": $secs, \"file_bytes\": $(stat -c %s "$WORK/services-$n.json")}"
    stop_pid "$EPID"
  done
fi

if ((WATCH)); then
  "$ROOT/tests/e2e/testbed.sh" build >/dev/null
  "$ROOT/tests/e2e/testbed.sh" build-etcd >/dev/null
  "$ROOT/tests/e2e/testbed.sh" netns-run bash "$0" --sizes "$SIZES" --create-via "$CREATE_METHOD" \
    --inner-watch "$WORK"
fi

mkdir -p "$ROOT/bench/results"
[[ -n "$OUT" ]] || OUT=$ROOT/bench/results/memory-$(date -u +%Y%m%dT%H%M%SZ).json
jq -s --arg rev "${ENVLINK_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}" \
  --arg date "$(date -u +%FT%TZ)" \
  --arg purge "${MIMALLOC_PURGE_DELAY:-default}" --arg eager "${MIMALLOC_ARENA_EAGER_COMMIT:-default}" \
  '{date: $date, git_rev: $rev, target_mb_at_100000: 64, mimalloc_purge_delay: $purge,
    mimalloc_arena_eager_commit: $eager, measurements: .}' \
  "$WORK/results.jsonl" >"$OUT"
{
  printf '\n%-13s %9s %10s %10s\n' source services VmRSS_MB VmHWM_MB
  jq -r '.measurements[] | [.source, .services, .vmrss_mb, .vmhwm_mb] | @tsv' "$OUT" |
    while IFS=$'\t' read -r a b c d; do printf '%-13s %9s %10s %10s\n' "$a" "$b" "$c" "$d"; done
  printf 'results: %s\n' "$OUT"
} >&2
