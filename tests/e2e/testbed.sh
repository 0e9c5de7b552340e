#!/usr/bin/env bash
# testbed.sh — a real (but minimal) Kubernetes 1.20 API server for envlink's e2e tests.
#
# Why this exists: the CI machines have no container engine (no kind/k3d) and cannot
# download release binaries, but Debian bookworm ships the complete Kubernetes 1.20.2 source
# (vendored dependencies included) as the *source* package `kubernetes`, plus Go 1.19 and
# etcd 3.4 as binary packages. So we build kube-apiserver from that source once, cache the
# binary, and run it next to etcd on loopback. There is no scheduler, controller-manager or
# kubelet: objects are admitted (webhooks run!) and stored, Pods stay Pending — exactly what
# an admission-webhook test needs.
#
# See /work/shared/TESTBED.md (or tests/e2e/README.md) for the background facts.
#
# Subcommands:
#   install                   apt packages + deb-src entry (needs root and the network)
#   build                     build/cache kube-apiserver 1.20.2 (skip if cached and working)
#   start STATE_DIR           fresh etcd + kube-apiserver, writes STATE_DIR/{kubeconfig,env}
#   stop STATE_DIR            stop kube-apiserver and etcd
#   start-apiserver STATE_DIR start kube-apiserver alone again, with the flags stored by `start`
#   stop-apiserver STATE_DIR  stop kube-apiserver alone (etcd keeps running)
#   restart-apiserver STATE_DIR  stop-apiserver + start-apiserver
#   netns-run CMD...          run CMD in a fresh network namespace that has only loopback
#
# Every failure exits non-zero with a message: CI must FAIL (never silently skip) when the
# API server cannot be built or started.

set -euo pipefail

# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

# Upstream version we build. It is fixed (not read from apt) so that a cached binary can be
# found and used without touching apt at all; `build` verifies that the Debian source
# package really carries this upstream version before building.
KUBE_VERSION="1.20.2"
KUBE_MAJOR="1"
KUBE_MINOR="20"

CACHE_ROOT="${ENVLINK_TESTBED_CACHE:-$HOME/.cache/envlink-testbed}"
CACHE_DIR="$CACHE_ROOT/kube-apiserver-$KUBE_VERSION"
APISERVER_BIN="$CACHE_DIR/kube-apiserver"

# Debian packages the testbed needs. golang-github-modern-go-reflect2-dev provides the
# fixed reflect2 sources that replace the vendored copy (see `build`).
APT_PACKAGES=(
  golang-go                           # Go 1.19, compiles kube-apiserver (GOPATH mode)
  etcd-server                         # etcd 3.4, the API server's storage
  golang-github-modern-go-reflect2-dev  # reflect2 1.0.2, fixes a Go>=1.18 crash in 1.20
  iproute2                            # `ip link set lo up` inside the namespace, `ss`
  util-linux                          # `unshare --net`
  openssl                             # service-account keypair, random token
  curl                                # readiness probes
  ca-certificates                     # apt over https mirrors, if any
)

# Documentation address (RFC 5737): the API server insists on a non-loopback advertise
# address, and nothing ever connects to it.
ADVERTISE_ADDRESS="192.0.2.10"
SERVICE_CIDR="10.96.0.0/16"

READY_TIMEOUT="${ENVLINK_TESTBED_READY_TIMEOUT:-90}"   # seconds, for /readyz
ETCD_TIMEOUT=30                                        # seconds, for etcd /health

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() {
  [[ $EUID -eq 0 ]] || die "'$1' needs root (apt-get / unshare)"
}

need_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found; run '$0 install' first"
  done
}

# Absolute path of a state dir (created if needed), so pid files and flags stay valid even
# if later subcommands are run from another working directory.
state_dir() {
  [[ -n "${1:-}" ]] || die "missing STATE_DIR argument"
  mkdir -p "$1"
  (cd "$1" && pwd -P)
}

# Is the process in pid file $1 alive? The pid file is named after the program (etcd.pid,
# kube-apiserver.pid) and we check the process's command line for that name, so a stale
# pid file whose pid was reused by an unrelated process is never mistaken for ours (and
# never killed by `stop`). argv[0] is the first NUL-terminated field of /proc/PID/cmdline.
pid_alive() {
  local pidfile=$1 pid name argv0=""
  [[ -f "$pidfile" ]] || return 1
  pid=$(cat "$pidfile")
  name=$(basename "$pidfile" .pid)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" 2>/dev/null || true
  [[ "$(basename -- "${argv0:-/}")" == "$name" ]]
}

# Stop the process in pid file $1 (SIGTERM, then SIGKILL after $2 seconds) and wait for it.
# A process we did not start as our own child cannot be `wait`ed for, so poll kill -0.
stop_pidfile() {
  local pidfile=$1 grace=${2:-20} name pid i
  name=$(basename "$pidfile" .pid)
  if ! pid_alive "$pidfile"; then
    log "$name: not running"
    rm -f "$pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  log "$name: stopping pid $pid"
  # SIGTERM: both etcd and kube-apiserver shut down cleanly on it (the API server drains
  # requests for --shutdown-delay-duration, 0 by default).
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still alive after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "$name: pid $pid does not die"
  fi
  rm -f "$pidfile"
}

# A TCP port on 127.0.0.1 that nobody listens on right now. We bind to port 0 and let the
# kernel pick (race-free enough for a test bed; the caller starts its server right away).
# `exclude` avoids handing out the same port twice before the first one is in use.
free_port() {
  local exclude=" ${1:-} " port
  while :; do
    port=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null) \
      || port=$((20000 + RANDOM % 40000))
    [[ "$exclude" == *" $port "* ]] && continue
    # double-check with ss (also covers the $RANDOM fallback)
    # (command substitution, not `| grep -q`: with pipefail an early-exiting grep can
    # make the pipeline fail through SIGPIPE)
    if [[ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]; then
      echo "$port"
      return 0
    fi
  done
}

print_log_tail() {
  local f
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    printf '\n----- last 40 lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2 || true
  done
}

# ---------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------

# apt-get source needs a deb-src entry for bookworm main; the machines ship only `deb`
# entries. We copy URI and keyring from the existing bookworm entry rather than hard-coding
# a mirror, so a machine that points at a local mirror/snapshot keeps using it.
ensure_deb_src() {
  local srcfile=/etc/apt/sources.list.d/envlink-testbed-src.sources
  local f

  # Already present? (one-line .list format or deb822 .sources format)
  if grep -Eqs '^[[:space:]]*deb-src[[:space:]].*[[:space:]]bookworm[[:space:]].*\bmain\b' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list; then
    log "deb-src for bookworm/main already configured (.list)"
    return 0
  fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    # deb822: paragraphs separated by blank lines; look for one with Types containing
    # deb-src, a Suites list containing the word bookworm and Components containing main.
    if awk -v RS= '
        /(^|\n)Types:[^\n]*deb-src/ && /(^|\n)Suites:[^\n]*(^|[ \t])bookworm([ \t]|$|\n)/ \
          && /(^|\n)Components:[^\n]*main/ { found = 1 }
        END { exit !found }' "$f"; then
      log "deb-src for bookworm/main already configured ($f)"
      return 0
    fi
  done

  # Find the deb URI (and keyring) that serves bookworm main.
  local uri="" keyring=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    read -r uri keyring < <(awk -v RS= '
        /(^|\n)Types:[^\n]*deb/ && /(^|\n)Suites:[^\n]*(^|[ \t])bookworm([ \t]|\n|$)/ \
          && /(^|\n)Components:[^\n]*main/ {
          u = ""; k = ""
          n = split($0, lines, "\n")
          for (i = 1; i <= n; i++) {
            if (lines[i] ~ /^URIs:/)      { sub(/^URIs:[ \t]*/, "", lines[i]); split(lines[i], us, /[ \t]+/); u = us[1] }
            if (lines[i] ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", lines[i]); k = lines[i] }
          }
          if (u != "") { print u, (k == "" ? "-" : k); exit }
        }' "$f") || true
    [[ -n "$uri" ]] && break
  done
  if [[ -z "$uri" ]]; then
    # one-line format: deb [signed-by=...] URI bookworm main ...
    local line
    line=$(grep -Ehs '^[[:space:]]*deb[[:space:]].*[[:space:]]bookworm[[:space:]].*\bmain\b' \
             /etc/apt/sources.list /etc/apt/sources.list.d/*.list | head -n1) || true
    if [[ -n "$line" ]]; then
      if [[ "$line" =~ signed-by=([^][:space:]]+) ]]; then keyring=${BASH_REMATCH[1]}; fi
      line=$(sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' <<<"$line")
      uri=${line%%[[:space:]]*}
    fi
  fi
  [[ -n "$uri" ]] || die "no apt 'deb' entry for bookworm main found; cannot derive a deb-src entry"
  # Signed-By may also hold an inline armored key (deb822); only reuse it if it is a path.
  [[ "$keyring" == /* ]] || keyring=""
  [[ -n "$keyring" ]] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg

  log "adding deb-src entry $srcfile ($uri bookworm main)"
  cat >"$srcfile" <<EOF
# Added by envlink tests/e2e/testbed.sh: 'apt-get source kubernetes' needs a deb-src entry
# (the Kubernetes 1.20.2 source package is what the e2e API server is built from).
Types: deb-src
URIs: $uri
Suites: bookworm
Components: main
Signed-By: $keyring
EOF
}

cmd_install() {
  need_root install
  export DEBIAN_FRONTEND=noninteractive
  ensure_deb_src
  # Always update: the deb-src index may be new, and stale indexes make installs fail.
  log "apt-get update"
  apt-get update -q || die "apt-get update failed"

  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" || die "apt-get install failed"
  else
    log "all packages already installed"
  fi

  # etcd-server's maintainer scripts may start a system etcd on 127.0.0.1:2379 where an
  # init system exists. We never use it (we pick our own ports), so this is harmless; we
  # only mention it.
  if [[ -n "$(ss -Hltn 'sport = :2379' 2>/dev/null)" ]]; then
    log "note: something (probably the system etcd service) listens on :2379; the testbed uses its own ports"
  fi
  log "install done"
}

# ---------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------

# The cached binary is usable if it runs and reports the expected version (which also
# proves the -ldflags version stamping worked).
binary_ok() {
  [[ -x "$APISERVER_BIN" ]] || return 1
  local out
  out=$("$APISERVER_BIN" --version 2>&1) || return 1
  [[ "$out" == "Kubernetes v$KUBE_VERSION" ]]
}

# The unpacked tree and Go cache take over 1 GB; the binary and the downloaded source package
# are all later runs need. Set ENVLINK_TESTBED_KEEP_SRC=1 to keep them for debugging.
remove_work_dir() {
  local work="$CACHE_DIR/work"
  [[ -d "$work" && "${ENVLINK_TESTBED_KEEP_SRC:-0}" != 1 ]] || return 0
  chmod -R u+w "$work" 2>/dev/null || true   # Go may leave read-only files behind
  rm -rf "$work"
}

cmd_build() {
  if binary_ok; then
    log "cached kube-apiserver OK: $APISERVER_BIN ($("$APISERVER_BIN" --version))"
    remove_work_dir   # leftovers of an interrupted build
    return 0
  fi
  [[ -e "$APISERVER_BIN" ]] && log "cached binary at $APISERVER_BIN is broken; rebuilding"

  need_cmd apt-get go tar
  local reflect2_src=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -d "$reflect2_src" ]] \
    || die "$reflect2_src missing: install golang-github-modern-go-reflect2-dev ('$0 install')"

  local work="$CACHE_DIR/work"
  local dl="$CACHE_DIR/download"
  mkdir -p "$dl"

  # 1. Fetch the Debian source package (only once: the download dir is kept so a rebuild
  #    needs no network). --download-only: we unpack the .orig tarball ourselves and do not
  #    need dpkg-source.
  #    (apt may warn "Download is performed unsandboxed as root" because the user `_apt`
  #    cannot write into a cache under /root; that is harmless.)
  if ! compgen -G "$dl/kubernetes_*.orig.tar.*" >/dev/null; then
    log "downloading Debian source package 'kubernetes' into $dl"
    (cd "$dl" && apt-get source --download-only kubernetes) \
      || die "apt-get source kubernetes failed (is the deb-src entry present? run '$0 install')"
  fi
  local orig
  orig=$(compgen -G "$dl/kubernetes_*.orig.tar.*" | head -n1)
  # The upstream version is the part of the file name between '_' and '.orig'. Bookworm's
  # is "1.20.5+really1.20.2" (Debian rolled 1.20.5 back to 1.20.2), so the real version is
  # the part after "+really" when present. It must equal the cache key.
  local upstream real
  upstream=$(basename "$orig"); upstream=${upstream#kubernetes_}; upstream=${upstream%%.orig.tar.*}
  real=${upstream##*+really}
  real=${real%%[+~]*}
  [[ "$real" == "$KUBE_VERSION" ]] \
    || die "Debian source package has upstream version $upstream (= $real), expected $KUBE_VERSION (cache key)"
  local dsc
  dsc=$(compgen -G "$dl/kubernetes_*.dsc" | head -n1) || true
  [[ -n "$dsc" ]] && log "source package: $(basename "$dsc" .dsc)"

  # 2. Unpack into a fresh tree. Only the upstream (.orig) tarball is used. The Debian
  #    tarball's patches (bookworm: CVE-2021-25743 and two companions) touch only
  #    kubectl/cli-runtime printing code (staging/src/k8s.io/{kubectl,cli-runtime}), none of
  #    which is linked into kube-apiserver, and debian/rules only builds the client — so
  #    applying them would change nothing here while adding a dpkg-source/quilt dependency.
  rm -rf "$work"
  mkdir -p "$work/gopath/src/k8s.io"
  log "unpacking $(basename "$orig")"
  mkdir -p "$work/src"
  tar -xf "$orig" -C "$work/src" || die "cannot unpack $orig"
  local tree
  tree=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d | head -n1)
  [[ -f "$tree/cmd/kube-apiserver/apiserver.go" ]] \
    || die "unexpected tarball layout: $tree/cmd/kube-apiserver/apiserver.go missing"

  # 3. GOPATH layout. Module mode fails with Go 1.19 ("updates to go.mod needed, disabled by
  #    -mod=vendor"); GOPATH mode with the tree at $GOPATH/src/k8s.io/kubernetes works.
  #    vendor/k8s.io/* are symlinks to staging/, which GOPATH mode resolves fine.
  export GOPATH="$work/gopath"
  export GO111MODULE=off
  export CGO_ENABLED=0
  export GOFLAGS=""
  # Keep Go's build cache inside the work dir, so it is removed with it and never pollutes
  # the user's ~/.cache/go-build with ~2 GB of objects.
  export GOCACHE="$work/gocache"
  ln -s "$tree" "$GOPATH/src/k8s.io/kubernetes"
  local k8s="$GOPATH/src/k8s.io/kubernetes"
  cd "$k8s"   # logical path through the symlink: Go derives the import path from $PWD

  log "go: $(go version)"

  # 4. Replace the vendored reflect2 v1.0.1 by Debian's 1.0.2. 1.0.1's unsafe map iteration
  #    does not match the Go >= 1.18 runtime: the API server dies with "fatal error: fault"
  #    on the first JSON patch a mutating webhook returns (json-iterator's sorted map
  #    encoding, used for the patch audit annotation). 1.0.2 is API-compatible.
  log "replacing vendor/github.com/modern-go/reflect2 with Debian's copy"
  local r2=vendor/github.com/modern-go/reflect2
  [[ -d "$r2" ]] || die "$r2 not found in the source tree"
  find "$r2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
  local f n=0
  for f in "$reflect2_src"/*.go "$reflect2_src"/*.s; do
    [[ -f "$f" ]] || continue
    [[ "$f" == *_test.go ]] && continue
    cp -L "$f" "$r2/"
    n=$((n + 1))
  done
  ((n > 0)) || die "no reflect2 sources copied from $reflect2_src"

  # 5. Generate pkg/generated/openapi/zz_generated.openapi.go, which the tarball lacks
  #    ("undefined: openapi.GetOpenAPIDefinitions"). Input packages: every package dir under
  #    pkg, cmd, plugin and vendor/k8s.io (following symlinks into staging) whose Go files
  #    carry a `// +k8s:openapi-gen=` tag, minus code-generator and sample-apiserver (as
  #    upstream's hack/ scripts do). Vendored packages are named by their canonical import
  #    path (k8s.io/api/...), which resolves through vendor/ from inside the tree.
  log "building openapi-gen"
  go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen \
    || die "building openapi-gen failed"

  log "collecting openapi-gen input packages"
  local inputs
  inputs=$(grep -rlR --include='*.go' -e '// +k8s:openapi-gen=' pkg cmd plugin vendor/k8s.io \
             | xargs -n1 dirname | sort -u \
             | grep -v -e '/code-generator/' -e '/sample-apiserver/' -e '^vendor/k8s.io/code-generator$' \
                       -e '^vendor/k8s.io/sample-apiserver$' \
             | sed -e 's#^vendor/##' -e 't' -e 's#^#k8s.io/kubernetes/#' \
             | paste -sd, -) || die "collecting openapi-gen inputs failed"
  [[ -n "$inputs" ]] || die "no packages with '+k8s:openapi-gen=' tags found"
  log "openapi-gen: $(tr ',' '\n' <<<"$inputs" | wc -l) input packages"

  log "generating pkg/generated/openapi/zz_generated.openapi.go"
  "$work/openapi-gen" \
      -i "$inputs" \
      -p k8s.io/kubernetes/pkg/generated/openapi \
      -O zz_generated.openapi \
      -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
      -o "$GOPATH/src" \
      --report-filename "$work/openapi-api-violations.txt" \
    >"$work/openapi-gen.log" 2>&1 \
    || { tail -n 40 "$work/openapi-gen.log" >&2; die "openapi-gen failed (log: $work/openapi-gen.log)"; }
  [[ -s pkg/generated/openapi/zz_generated.openapi.go ]] \
    || die "openapi-gen did not produce pkg/generated/openapi/zz_generated.openapi.go"

  # 6. Build. Without the -X version variables the server reports v0.0.0-master and
  #    version-checking clients (Helm, kubectl's skew warning) misbehave; both the
  #    component-base and the client-go copies of the variables must be set.
  local ldflags="-s -w" p
  for p in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
           k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitMajor=$KUBE_MAJOR -X $p.gitMinor=$KUBE_MINOR -X $p.gitVersion=v$KUBE_VERSION"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  log "building kube-apiserver (first build: about 4-8 minutes on 2 cores)"
  go build -ldflags "$ldflags" -o "$CACHE_DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver \
    || die "go build of kube-apiserver failed"
  mv -f "$CACHE_DIR/kube-apiserver.tmp" "$APISERVER_BIN"   # atomic: no half-written cache

  binary_ok || die "built binary does not report 'Kubernetes v$KUBE_VERSION': $("$APISERVER_BIN" --version 2>&1 || true)"
  log "built $APISERVER_BIN ($("$APISERVER_BIN" --version))"

  cd /
  remove_work_dir
}

# ---------------------------------------------------------------------------------------
# start / stop
# ---------------------------------------------------------------------------------------

# Launch "$@" in the background with output to $logfile, recording its pid in $pidfile.
# stdin from /dev/null and stdout/stderr to the log, so a caller that captures our output
# (e.g. subprocess.run(capture_output=True)) is not held open by the daemons.
launch() {
  local pidfile=$1 logfile=$2
  shift 2
  "$@" </dev/null >>"$logfile" 2>&1 &
  local pid=$! i
  echo "$pid" >"$pidfile"
  # Until the forked child has exec'd, /proc/PID/cmdline still shows bash, and pid_alive
  # (which checks the program name) would call the process dead: callers that check right
  # away then fail with "exited during startup" although it is starting fine (seen on a
  # loaded 2-core machine). Wait for the exec (or for the child to die).
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pidfile" && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
}

start_etcd() {
  local st=$1
  # shellcheck disable=SC1091
  source "$st/ports"
  local -a args
  mapfile -t args <"$st/etcd.args"
  log "starting etcd on 127.0.0.1:$ETCD_PORT (peer $ETCD_PEER_PORT)"
  launch "$st/etcd.pid" "$st/etcd.log" etcd "${args[@]}"
  local deadline=$((SECONDS + ETCD_TIMEOUT))
  until [[ "$(curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null)" == *'"health":"true"'* ]]; do
    if ! pid_alive "$st/etcd.pid"; then
      print_log_tail "$st/etcd.log"
      die "etcd exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail "$st/etcd.log"
      die "etcd not healthy after ${ETCD_TIMEOUT}s"
    fi
    sleep 0.5
  done
  log "etcd healthy"
}

cmd_start_apiserver() {
  local st
  st=$(state_dir "${1:-}")
  [[ -f "$st/apiserver.args" && -f "$st/ports" ]] \
    || die "$st was not initialised by '$0 start'"
  binary_ok || die "kube-apiserver not built or broken at $APISERVER_BIN; run '$0 build'"
  pid_alive "$st/kube-apiserver.pid" && die "kube-apiserver already running (pid $(cat "$st/kube-apiserver.pid"))"
  pid_alive "$st/etcd.pid" || die "etcd is not running in $st"
  # shellcheck disable=SC1091
  source "$st/ports"
  local -a args
  mapfile -t args <"$st/apiserver.args"
  local token
  token=$(cat "$st/token")

  log "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
  printf '\n===== start %s =====\n' "$(date -u +%FT%TZ)" >>"$st/kube-apiserver.log"
  launch "$st/kube-apiserver.pid" "$st/kube-apiserver.log" "$APISERVER_BIN" "${args[@]}"

  # /readyz (not /healthz) also waits for the post-start hooks, e.g. RBAC bootstrap roles
  # and the default/kube-system namespaces, so the server is fully usable when it answers ok.
  local deadline=$((SECONDS + READY_TIMEOUT)) out=""
  while :; do
    out=$(curl -sS -k --max-time 3 -H "Authorization: Bearer $token" \
            "https://127.0.0.1:$APISERVER_PORT/readyz" 2>&1) || true
    [[ "$out" == "ok" ]] && break
    if ! pid_alive "$st/kube-apiserver.pid"; then
      print_log_tail "$st/kube-apiserver.log" "$st/etcd.log"
      die "kube-apiserver exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      log "last /readyz answer: $out"
      print_log_tail "$st/kube-apiserver.log" "$st/etcd.log"
      die "kube-apiserver not ready after ${READY_TIMEOUT}s"
    fi
    sleep 1
  done

  # The server generated a self-signed CA + serving cert in --cert-dir on its first start
  # (kept across restarts). apiserver.crt holds the serving cert followed by that CA; the
  # serving cert has 127.0.0.1 as an IP SAN (the bind address), so clients can verify TLS
  # against the CA instead of skipping verification.
  if [[ ! -s "$st/ca.crt" ]]; then
    awk '/-----BEGIN CERTIFICATE-----/ { n++; buf = "" } { buf = buf $0 "\n" }
         /-----END CERTIFICATE-----/ { last = buf } END { printf "%s", last }' \
        "$st/certs/apiserver.crt" >"$st/ca.crt"
    [[ -s "$st/ca.crt" ]] || die "could not extract the CA from $st/certs/apiserver.crt"
  fi
  curl -fsS --max-time 5 --cacert "$st/ca.crt" -H "Authorization: Bearer $token" \
       "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null \
    || die "TLS verification against $st/ca.crt failed"
  log "kube-apiserver ready"
}

cmd_stop_apiserver() {
  local st
  st=$(state_dir "${1:-}")
  stop_pidfile "$st/kube-apiserver.pid" 30
}

cmd_restart_apiserver() {
  cmd_stop_apiserver "$1"
  cmd_start_apiserver "$1"
}

start_cleanup() {
  local rc=$?
  ((rc == 0)) && return 0
  log "start failed (exit $rc); stopping what was started; logs in $START_STATE_DIR"
  stop_pidfile "$START_STATE_DIR/kube-apiserver.pid" 10 || true
  stop_pidfile "$START_STATE_DIR/etcd.pid" 10 || true
  exit "$rc"
}

cmd_start() {
  local st
  st=$(state_dir "${1:-}")
  need_cmd etcd curl openssl ss
  binary_ok || die "kube-apiserver not built or broken at $APISERVER_BIN; run '$0 build'"
  if pid_alive "$st/etcd.pid" || pid_alive "$st/kube-apiserver.pid"; then
    die "testbed in $st is already running; '$0 stop $st' first"
  fi

  # Fresh state: remove everything a previous run may have left (only our own entries, in
  # case STATE_DIR holds other files of the caller).
  rm -rf "$st/etcd-data" "$st/certs"
  rm -f "$st"/{etcd,kube-apiserver}.{log,pid,args} "$st"/apiserver.args "$st"/{kubeconfig,env,ports,token,token.csv,ca.crt,sa.key,sa.pub}
  mkdir -p "$st/certs"

  # Ports: free loopback ports, chosen once and stored so restarts reuse them (a restarted
  # API server must come back on the same URL the tests and webhook registrations use).
  local etcd_port etcd_peer_port apiserver_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port "$etcd_port")
  apiserver_port=$(free_port "$etcd_port $etcd_peer_port")
  cat >"$st/ports" <<EOF
ETCD_PORT=$etcd_port
ETCD_PEER_PORT=$etcd_peer_port
APISERVER_PORT=$apiserver_port
EOF

  # Credentials: a static bearer token mapped to system:masters (cluster-admin under RBAC),
  # and the service-account signing keypair that 1.20 requires
  # (--service-account-signing-key-file / --service-account-issuer are mandatory flags).
  local token
  token=$(openssl rand -hex 24)
  echo "$token" >"$st/token"
  echo "$token,admin,admin,system:masters" >"$st/token.csv"
  openssl genrsa -out "$st/sa.key" 2048 2>/dev/null || die "openssl genrsa failed"
  openssl rsa -in "$st/sa.key" -pubout -out "$st/sa.pub" 2>/dev/null || die "openssl rsa -pubout failed"
  chmod 600 "$st/token" "$st/token.csv" "$st/sa.key"

  # etcd: loopback-only client and peer URLs (the default peer URL would be :2380 on all
  # interfaces and clash with a system etcd). One line per argument for `mapfile`.
  cat >"$st/etcd.args" <<EOF
--name=testbed
--data-dir=$st/etcd-data
--listen-client-urls=http://127.0.0.1:$etcd_port
--advertise-client-urls=http://127.0.0.1:$etcd_port
--listen-peer-urls=http://127.0.0.1:$etcd_peer_port
--initial-advertise-peer-urls=http://127.0.0.1:$etcd_peer_port
--initial-cluster=testbed=http://127.0.0.1:$etcd_peer_port
--initial-cluster-state=new
--log-level=warn
EOF

  # kube-apiserver flags. Stored in STATE_DIR so start-apiserver/restart-apiserver reuse
  # exactly the same configuration.
  #  --advertise-address: must not be loopback; a documentation address nobody connects to.
  #  --enable-aggregator-routing: webhook configs naming a Service are resolved through
  #    Endpoints (none exist) instead of dialling the Service's cluster IP (10.96.x.x, which
  #    must never be a target here). Second guard: everything runs in a loopback-only netns.
  #  --disable-admission-plugins=ServiceAccount: no controller-manager creates the default
  #    ServiceAccount, so Pods would be rejected.
  #  --cert-dir: the server writes its self-signed serving cert/CA there on first start.
  #  --allow-privileged: like real clusters (kubeadm), so Pod specs from charts are not
  #    rejected for securityContext.privileged.
  cat >"$st/apiserver.args" <<EOF
--etcd-servers=http://127.0.0.1:$etcd_port
--bind-address=127.0.0.1
--secure-port=$apiserver_port
--advertise-address=$ADVERTISE_ADDRESS
--cert-dir=$st/certs
--token-auth-file=$st/token.csv
--authorization-mode=RBAC
--service-account-issuer=https://kubernetes.default.svc.cluster.local
--service-account-key-file=$st/sa.pub
--service-account-signing-key-file=$st/sa.key
--service-cluster-ip-range=$SERVICE_CIDR
--disable-admission-plugins=ServiceAccount
--enable-aggregator-routing=true
--allow-privileged=true
--profiling=false
--v=1
EOF
  # Extra flags from the environment, one per word, after the defaults (for a repeated flag
  # the last one wins). Default: none. bench/memory.sh uses it for 100,000 Services:
  # ENVLINK_TESTBED_APISERVER_ARGS="--service-cluster-ip-range=10.96.0.0/15 --etcd-compaction-interval=30s"
  local extra
  for extra in ${ENVLINK_TESTBED_APISERVER_ARGS:-}; do
    printf '%s\n' "$extra" >>"$st/apiserver.args"
  done

  # If anything below fails, do not leave a half-started etcd/API server behind.
  START_STATE_DIR=$st
  trap start_cleanup EXIT
  start_etcd "$st"
  cmd_start_apiserver "$st"

  # kubeconfig with TLS verification against the server's own CA and the bearer token.
  cat >"$st/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: envlink-testbed
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority: $st/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: envlink-testbed
  context:
    cluster: envlink-testbed
    user: admin
    namespace: default
current-context: envlink-testbed
EOF
  chmod 600 "$st/kubeconfig"

  # Shell-sourceable (and trivially parseable) summary for test harnesses.
  cat >"$st/env" <<EOF
KUBECONFIG=$st/kubeconfig
APISERVER_URL=https://127.0.0.1:$apiserver_port
APISERVER_PORT=$apiserver_port
APISERVER_TOKEN=$token
APISERVER_CA=$st/ca.crt
ETCD_PORT=$etcd_port
EOF
  trap - EXIT
  log "testbed running (state in $st)"
  echo "$st/kubeconfig"
}

cmd_stop() {
  local st
  st=$(state_dir "${1:-}")
  # API server first, so it does not log a storm of etcd connection errors.
  stop_pidfile "$st/kube-apiserver.pid" 30
  stop_pidfile "$st/etcd.pid" 30
}

# ---------------------------------------------------------------------------------------
# netns-run
# ---------------------------------------------------------------------------------------

# No traffic may leave loopback: a fresh network namespace has only a (down) `lo`; we bring
# it up and run the command there. Cluster IPs (10.96.x.x) and anything else off loopback
# are then unroutable by construction. Packages must be installed *before* (no network
# inside). Processes started inside (etcd, kube-apiserver via `start`) live in that
# namespace: run start, the tests and stop all within one netns-run invocation.
cmd_netns_run() {
  (($#)) || die "usage: $0 netns-run CMD [ARGS...]"
  need_cmd unshare ip
  local -a unshare_args=(--net)
  if [[ $EUID -ne 0 ]]; then
    # Unprivileged fallback: a user namespace grants the capability to create the netns.
    unshare_args=(--user --map-root-user --net)
  fi
  exec unshare "${unshare_args[@]}" -- bash -c '
    set -euo pipefail
    ip link set lo up
    # Sanity check: only loopback exists and there is no route to a cluster IP.
    if [[ -n "$(ip -o link show | grep -v ": lo:")" ]]; then
      echo "[testbed] ERROR: netns has non-loopback interfaces" >&2; exit 1
    fi
    if ip route get 10.96.0.1 >/dev/null 2>&1; then
      echo "[testbed] ERROR: 10.96.0.1 is routable inside the netns" >&2; exit 1
    fi
    exec "$@"' testbed-netns "$@"
}

# ---------------------------------------------------------------------------------------

usage() {
  sed -n '/^# Subcommands:/,/^# Every failure/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2
  exit 2
}

main() {
  local sub=${1:-}
  (($#)) && shift
  case "$sub" in
    install)           cmd_install "$@" ;;
    build)             cmd_build "$@" ;;
    start)             cmd_start "$@" ;;
    stop)              cmd_stop "$@" ;;
    start-apiserver)   cmd_start_apiserver "$@" ;;
    stop-apiserver)    cmd_stop_apiserver "$@" ;;
    restart-apiserver) cmd_restart_apiserver "$@" ;;
    netns-run)         cmd_netns_run "$@" ;;
    -h|--help|help|"") usage ;;
    *) log "unknown subcommand: $sub"; usage ;;
  esac
}

main "$@"
