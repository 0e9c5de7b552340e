#!/usr/bin/env bash
# testbed.sh — real (but minimal) Kubernetes API servers for envlink's e2e and chart tests:
# kube-apiserver 1.20.2 and a current one (ENVLINK_K8S=1.20|current), plus a Helm CLI.
#
# Why this exists: the CI machines have no container engine (no kind/k3d) and cannot
# download release binaries. But Debian bookworm ships the complete Kubernetes 1.20.2 source
# (vendored dependencies included) as the *source* package `kubernetes`, plus Go 1.19 and
# etcd 3.4 as binary packages; and the Go module proxy serves k8s.io/kubernetes (1.34-1.37),
# its staging modules and Helm. So we build kube-apiserver (and for the current version
# kubectl) once, cache the binaries, and run them on loopback. There is no
# scheduler, controller-manager or kubelet: objects are admitted (webhooks run!) and stored,
# Pods stay Pending — exactly what an admission-webhook test needs.
#
# See tests/e2e/README.md (and /work/shared/TESTBED.md) for the background facts.
#
# Environment:
#   ENVLINK_K8S=1.20|current           which API server (default 1.20); `start` records it in
#                                      STATE_DIR, later subcommands follow the recording
#   ENVLINK_TESTBED_IP_FAMILY=ipv4|ipv6  for `start` (ipv6: current only): bind address,
#                                      Service range and advertise address of that family
#   ENVLINK_TESTBED_CACHE              cache root (default ~/.cache/envlink-testbed)
#
# Subcommands:
#   install                   apt packages + deb-src entry (needs root and the network)
#   build                     build/cache the selected API server (skip if cached and working)
#   build-helm                build/cache the helm CLI (helm.sh/helm/v4/cmd/helm)
#   build-etcd                build/cache etcd $ETCD_VERSION for the current release
#   paths                     print KUBE_APISERVER=, KUBECTL=, ETCD=, HELM= for the selection
#   start STATE_DIR           fresh etcd + kube-apiserver, writes STATE_DIR/{kubeconfig,env}
#   stop STATE_DIR            stop kube-apiserver and etcd
#   start-apiserver STATE_DIR start kube-apiserver alone again, with the flags stored by `start`
#   stop-apiserver STATE_DIR  stop kube-apiserver alone (etcd keeps running)
#   restart-apiserver STATE_DIR  stop-apiserver + start-apiserver
#   netns-run CMD...          run CMD in a fresh network namespace that has only loopback
#
# Every failure exits non-zero with a message: CI must FAIL (never silently skip) when an
# API server cannot be built or started.

set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")"

# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

# Which API server: ENVLINK_K8S=1.20 (default) or ENVLINK_K8S=current.
#
#  1.20     kube-apiserver v1.20.2 from Debian bookworm's `kubernetes` source package, built
#           in GOPATH mode with Debian's Go 1.19 (called by path), etcd 3.4 from Debian, and
#           the machine's kubectl.
#  current  the newest Kubernetes release we build from the Go module proxy
#           (CURRENT_KUBE_VERSION below): kube-apiserver AND kubectl of that version from a
#           generated Go module that requires k8s.io/kubernetes@v1.X.Y and pins its staging
#           modules to v0.X.Y, built with the machine's Go (/usr/local/go). etcd: built from
#           go.etcd.io/etcd/server/v3@v$ETCD_VERSION (`build-etcd`). kube-apiserver 1.37.2
#           also starts on Debian's 3.4.23, but with it the storage feature
#           RequestWatchProgress is off and the API server refuses streaming lists
#           (sendInitialEvents), which envlink uses where they are served.
#
# Versions are fixed (not "latest") so that a cached binary is found and used without the
# network, and so that a run is reproducible; bump them deliberately.
K8S_SELECT="${ENVLINK_K8S:-1.20}"
CURRENT_KUBE_VERSION="1.37.2"            # newest k8s.io/kubernetes release on the proxy
HELM_VERSION="4.3.2"                     # newest helm.sh/helm/v4 release on the proxy
ETCD_VERSION="3.6.16"                    # etcd for the current release (newest 3.6 on the proxy)

CACHE_ROOT="${ENVLINK_TESTBED_CACHE:-$HOME/.cache/envlink-testbed}"

# Go for the 1.20.2 build: Debian's 1.19, by path, because the machine's newer Go comes first
# on PATH. GOTOOLCHAIN=local everywhere: a go.mod or environment must never make `go` switch
# (or download) another toolchain under us.
GO_1_20_BUILD="${ENVLINK_TESTBED_GO119:-/usr/lib/go-1.19/bin/go}"
# Go for the module builds (current Kubernetes, Helm): the machine's Go (1.26 at
# /usr/local/go). k8s.io/kubernetes v1.37 and helm v4.3 declare `go 1.26.0`, so no toolchain
# download is needed.
GO_MODULES="${ENVLINK_TESTBED_GO:-/usr/local/go/bin/go}"
export GOTOOLCHAIN=local

# Module builds share one module download cache (kept: a rebuild, e.g. after the binaries
# were deleted, needs no network) and one Go build cache (deleted once every Go binary is
# built, like the 1.20 work dir; ENVLINK_TESTBED_KEEP_SRC=1 keeps it).
GO_MODCACHE="$CACHE_ROOT/gomod"
GO_BUILDCACHE="$CACHE_ROOT/go-build"

HELM_DIR="$CACHE_ROOT/helm-$HELM_VERSION"
HELM_BIN="$HELM_DIR/helm"

case "$K8S_SELECT" in
  1.20|1.20.2)
    K8S_SELECT=1.20
    KUBE_VERSION="1.20.2"
    CACHE_DIR="$CACHE_ROOT/kube-apiserver-$KUBE_VERSION"
    APISERVER_BIN="$CACHE_DIR/kube-apiserver"
    KUBECTL_BIN=""        # the machine's kubectl (1.32 works against 1.20; see README)
    ETCD_BIN=""           # Debian's etcd 3.4, `etcd` on PATH
    ;;
  current)
    KUBE_VERSION="$CURRENT_KUBE_VERSION"
    CACHE_DIR="$CACHE_ROOT/kubernetes-$KUBE_VERSION"
    APISERVER_BIN="$CACHE_DIR/kube-apiserver"
    KUBECTL_BIN="$CACHE_DIR/kubectl"
    # etcd $ETCD_VERSION built by `build-etcd` (see above), or the one ENVLINK_TESTBED_ETCD
    # names (a binary called etcd).
    ETCD_BIN="${ENVLINK_TESTBED_ETCD:-$CACHE_ROOT/etcd-$ETCD_VERSION/etcd}"
    ;;
  *)
    printf '[testbed] ERROR: ENVLINK_K8S=%s: expected 1.20 or current\n' "$K8S_SELECT" >&2
    exit 2
    ;;
esac
KUBE_MAJOR="${KUBE_VERSION%%.*}"
KUBE_MINOR="${KUBE_VERSION#*.}"; KUBE_MINOR="${KUBE_MINOR%%.*}"

# Debian packages the testbed needs. golang-github-modern-go-reflect2-dev provides the
# fixed reflect2 sources that replace the vendored copy (see `build`).
APT_PACKAGES=(
  golang-1.19-go                      # Go 1.19, compiles kube-apiserver 1.20.2 (GOPATH mode)
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
# The same for an IPv6 run (ENVLINK_TESTBED_IP_FAMILY=ipv6): documentation range (RFC 3849)
# and a ULA range (a /108 like kubeadm's IPv6 default size).
ADVERTISE_ADDRESS_V6="2001:db8::10"
SERVICE_CIDR_V6="fd00:10:96::/108"

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
  local exclude=" ${1:-} " host=${2:-127.0.0.1} port
  while :; do
    port=$(python3 -c 'import socket, sys
h = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
s.bind((h, 0)); print(s.getsockname()[1]); s.close()' "$host" 2>/dev/null) \
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
# proves the -ldflags version stamping worked). For `current`, kubectl too.
binary_ok() {
  [[ -x "$APISERVER_BIN" ]] || return 1
  local out
  out=$("$APISERVER_BIN" --version 2>&1) || return 1
  [[ "$out" == "Kubernetes v$KUBE_VERSION" ]] || return 1
  [[ "$K8S_SELECT" == 1.20 ]] && return 0
  kubectl_ok
}

kubectl_ok() {
  [[ -x "$KUBECTL_BIN" ]] || return 1
  local out
  out=$("$KUBECTL_BIN" version --client -o json 2>/dev/null) || return 1
  [[ "$out" == *"\"gitVersion\": \"v$KUBE_VERSION\""* ]]
}

# The etcd to run: Debian's for 1.20, the built (or named) one for the current release.
etcd_cmd() {
  if [[ -n "$ETCD_BIN" ]]; then echo "$ETCD_BIN"; else echo etcd; fi
}

# The unpacked tree and Go cache take over 1 GB; the binary and the downloaded source package
# are all later runs need. Set ENVLINK_TESTBED_KEEP_SRC=1 to keep them for debugging.
remove_work_dir() {
  local work="$CACHE_DIR/work"
  [[ -d "$work" && "${ENVLINK_TESTBED_KEEP_SRC:-0}" != 1 ]] || return 0
  chmod -R u+w "$work" 2>/dev/null || true   # Go may leave read-only files behind
  rm -rf "$work"
}

build_1_20() {
  if binary_ok; then
    log "cached kube-apiserver OK: $APISERVER_BIN ($("$APISERVER_BIN" --version))"
    remove_work_dir   # leftovers of an interrupted build
    return 0
  fi
  [[ -e "$APISERVER_BIN" ]] && log "cached binary at $APISERVER_BIN is broken; rebuilding"

  need_cmd apt-get tar
  [[ -x "$GO_1_20_BUILD" ]] || die "$GO_1_20_BUILD missing: install golang-1.19-go ('$0 install')"
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

  log "go: $GO_1_20_BUILD ($("$GO_1_20_BUILD" version))"

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
  "$GO_1_20_BUILD" build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen \
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
  "$GO_1_20_BUILD" build -ldflags "$ldflags" -o "$CACHE_DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver \
    || die "go build of kube-apiserver failed"
  mv -f "$CACHE_DIR/kube-apiserver.tmp" "$APISERVER_BIN"   # atomic: no half-written cache

  binary_ok || die "built binary does not report 'Kubernetes v$KUBE_VERSION': $("$APISERVER_BIN" --version 2>&1 || true)"
  log "built $APISERVER_BIN ($("$APISERVER_BIN" --version))"

  cd /
  remove_work_dir
}

# ---------------------------------------------------------------------------------------
# Module builds with the machine's Go: current Kubernetes, Helm
# ---------------------------------------------------------------------------------------

# Environment for every module-mode build. CGO off: static binaries, no C toolchain needed.
# -buildvcs=false: the generated modules are not in a VCS. The proxy settings (GOPROXY,
# GOSUMDB) are the machine's: every module is verified against the checksum database.
go_module_env() {
  [[ -x "$GO_MODULES" ]] || die "Go not found at $GO_MODULES (set ENVLINK_TESTBED_GO to a Go >= 1.26)"
  export GO111MODULE=on CGO_ENABLED=0 GOTOOLCHAIN=local
  export GOFLAGS="-mod=readonly -buildvcs=false"
  export GOMODCACHE="$GO_MODCACHE" GOCACHE="$GO_BUILDCACHE"
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}

# The Go build cache (~2-3 GB after Kubernetes and Helm) is only worth keeping while some Go
# binary still has to be built; drop it once all of them are cached.
maybe_remove_go_buildcache() {
  [[ "${ENVLINK_TESTBED_KEEP_SRC:-0}" == 1 ]] && return 0
  ENVLINK_K8S=current bash "$SELF" build --check >/dev/null 2>&1 || return 0
  helm_ok || return 0
  if [[ -d "$GO_BUILDCACHE" ]]; then
    log "all Go binaries cached; removing the Go build cache $GO_BUILDCACHE"
    chmod -R u+w "$GO_BUILDCACHE" 2>/dev/null || true
    rm -rf "$GO_BUILDCACHE"
  fi
}

# Writes a Go module in $1 named $2 whose only source is a `tools` file importing the
# packages $3... (so that `go mod tidy` records every module they need in go.mod/go.sum).
write_tools_module() {
  local dir=$1 name=$2 pkg
  shift 2
  rm -rf "$dir"
  mkdir -p "$dir"
  {
    echo '//go:build tools'
    echo
    echo '// Package tools only pins the packages this generated module builds.'
    echo 'package tools'
    echo
    echo 'import ('
    for pkg in "$@"; do echo "	_ \"$pkg\""; done
    echo ')'
  } >"$dir/tools.go"
  (cd "$dir" && "$GO_MODULES" mod init "$name" >/dev/null 2>&1) || die "go mod init $name failed"
}

# build_current: kube-apiserver and kubectl of Kubernetes $KUBE_VERSION.
#
# k8s.io/kubernetes is not meant to be a dependency: its go.mod requires its staging modules
# (k8s.io/api, k8s.io/apiserver, ...) at v0.0.0 and replaces them with ./staging/src/...,
# and replace directives of a dependency are ignored. So our generated module requires
# k8s.io/kubernetes@v1.X.Y and replaces every k8s.io/* module that go.mod replaces with a
# ./staging path by the published k8s.io/<name>@v0.X.Y (the same code, published from
# staging at release time). The generated OpenAPI file is part of the module in current
# releases (no openapi-gen step, unlike 1.20).
build_current() {
  go_module_env
  local v=$KUBE_VERSION work="$CACHE_DIR/work"
  local staging_v="v0.${v#*.}"          # 1.37.2 -> v0.37.2
  mkdir -p "$CACHE_DIR"
  log "go: $GO_MODULES ($("$GO_MODULES" version)); modules in $GOMODCACHE"

  local t0=$SECONDS
  log "fetching k8s.io/kubernetes@v$v's go.mod"
  local gomod
  # (from $CACHE_DIR: outside any Go module)
  gomod=$(cd "$CACHE_DIR" && "$GO_MODULES" mod download -json "k8s.io/kubernetes@v$v" \
            | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p') \
    || die "go mod download k8s.io/kubernetes@v$v failed (is the Go module proxy reachable?)"
  [[ -f "$gomod" ]] || die "no go.mod for k8s.io/kubernetes@v$v (got '$gomod')"

  write_tools_module "$work/mod" envlink-testbed/kubernetes \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl

  local -a edits=("-require=k8s.io/kubernetes@v$v") staged=()
  local m
  # lines like "	k8s.io/api => ./staging/src/k8s.io/api" inside the replace block
  mapfile -t staged < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod")
  ((${#staged[@]} > 10)) || die "found only ${#staged[@]} staging replaces in $gomod: layout changed?"
  for m in "${staged[@]}"; do
    [[ "$m" == k8s.io/* ]] || die "unexpected staging module $m in $gomod"
    edits+=("-replace=$m=$m@$staging_v")
  done
  log "requiring k8s.io/kubernetes@v$v, ${#staged[@]} staging modules replaced by @$staging_v"
  (cd "$work/mod" && "$GO_MODULES" mod edit "${edits[@]}") || die "go mod edit failed"
  (cd "$work/mod" && GOFLAGS=-mod=mod "$GO_MODULES" mod tidy) >"$work/tidy.log" 2>&1 \
    || { tail -n 30 "$work/tidy.log" >&2; die "go mod tidy for k8s.io/kubernetes@v$v failed (log: $work/tidy.log)"; }
  log "modules resolved in $((SECONDS - t0))s"

  # Version stamping: without it the server says v0.0.0-master and version-checking clients
  # (Helm's kubeVersion constraints, kubectl's skew warning) misbehave. Module paths, no
  # vendor/ prefix in module mode.
  local ldflags="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitMajor=$KUBE_MAJOR -X $p.gitMinor=$KUBE_MINOR -X $p.gitVersion=v$v"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local what pkg out t
  for what in kube-apiserver kubectl; do
    pkg=k8s.io/kubernetes/cmd/$what
    out="$CACHE_DIR/$what"
    t=$SECONDS
    log "building $what ($pkg)"
    (cd "$work/mod" && "$GO_MODULES" build -ldflags "$ldflags" -o "$out.tmp" "$pkg") \
      || die "go build of $what (Kubernetes v$v) failed"
    mv -f "$out.tmp" "$out"   # atomic: no half-written cache
    log "built $what in $((SECONDS - t))s"
  done
  # keep the generated go.mod/go.sum next to the binaries: they say exactly what was built
  cp "$work/mod/go.mod" "$CACHE_DIR/go.mod"; cp "$work/mod/go.sum" "$CACHE_DIR/go.sum"

  "$APISERVER_BIN" --version >&2 || true
  binary_ok || die "built binaries do not report Kubernetes v$v: $("$APISERVER_BIN" --version 2>&1 || true); $("$KUBECTL_BIN" version --client 2>&1 | head -n1 || true)"
  log "Kubernetes v$v built in $((SECONDS - t0))s: $CACHE_DIR/{kube-apiserver,kubectl}"
  remove_work_dir
}

# ---------------------------------------------------------------------------------------
# Helm CLI
# ---------------------------------------------------------------------------------------

helm_ok() {
  [[ -x "$HELM_BIN" ]] || return 1
  local out
  out=$("$HELM_BIN" version --template '{{.Version}}' 2>/dev/null) || return 1
  [[ "$out" == "v$HELM_VERSION" ]]
}

# The real `helm` command (helm.sh/helm/v4/cmd/helm) at $HELM_VERSION, stamped like
# upstream's Makefile does for a release (version, empty metadata, clean tree).
cmd_build_helm() {
  if helm_ok; then
    log "cached helm OK: $HELM_BIN ($("$HELM_BIN" version --short))"
    # leftovers of an interrupted or ENVLINK_TESTBED_KEEP_SRC=1 build
    [[ "${ENVLINK_TESTBED_KEEP_SRC:-0}" == 1 ]] || rm -rf "$HELM_DIR/work"
    maybe_remove_go_buildcache
    return 0
  fi
  go_module_env
  local t0=$SECONDS work="$HELM_DIR/work"
  mkdir -p "$HELM_DIR"
  log "go: $GO_MODULES ($("$GO_MODULES" version)); modules in $GOMODCACHE"
  write_tools_module "$work/mod" envlink-testbed/helm helm.sh/helm/v4/cmd/helm
  (cd "$work/mod" && "$GO_MODULES" mod edit "-require=helm.sh/helm/v4@v$HELM_VERSION" \
     && GOFLAGS=-mod=mod "$GO_MODULES" mod tidy) >"$work/tidy.log" 2>&1 \
    || { tail -n 30 "$work/tidy.log" >&2; die "resolving helm.sh/helm/v4@v$HELM_VERSION failed (log: $work/tidy.log)"; }
  log "modules resolved in $((SECONDS - t0))s; building helm v$HELM_VERSION"
  local p=helm.sh/helm/v4/internal/version
  (cd "$work/mod" && "$GO_MODULES" build \
      -ldflags "-s -w -X $p.version=v$HELM_VERSION -X $p.metadata= -X $p.gitTreeState=clean" \
      -o "$HELM_BIN.tmp" helm.sh/helm/v4/cmd/helm) \
    || die "go build of helm v$HELM_VERSION failed"
  mv -f "$HELM_BIN.tmp" "$HELM_BIN"
  cp "$work/mod/go.mod" "$HELM_DIR/go.mod"; cp "$work/mod/go.sum" "$HELM_DIR/go.sum"
  helm_ok || die "built helm does not report v$HELM_VERSION: $("$HELM_BIN" version 2>&1 || true)"
  log "helm $("$HELM_BIN" version --short) built in $((SECONDS - t0))s: $HELM_BIN"
  [[ "${ENVLINK_TESTBED_KEEP_SRC:-0}" == 1 ]] || rm -rf "$work"
  maybe_remove_go_buildcache
}

# ---------------------------------------------------------------------------------------
# etcd (for the current release)
# ---------------------------------------------------------------------------------------

etcd_ok() {
  [[ -x "$1" ]] && "$1" --version 2>/dev/null | grep -qx "etcd Version: $ETCD_VERSION"
}

# etcd's own main (go.etcd.io/etcd/server/v3/etcdmain) at $ETCD_VERSION, from a generated
# module: the module proxy serves the server module, not etcd's root module with main.go.
cmd_build_etcd() {
  local dir="$CACHE_ROOT/etcd-$ETCD_VERSION"
  if etcd_ok "$dir/etcd"; then
    log "cached etcd OK: $dir/etcd ($ETCD_VERSION)"
    return 0
  fi
  go_module_env
  local t0=$SECONDS work="$dir/work"
  rm -rf "$work"; mkdir -p "$work"
  printf '%s\n' '// etcd, exactly as its own main starts it.' 'package main' '' \
    'import (' '	"os"' '' '	"go.etcd.io/etcd/server/v3/etcdmain"' ')' '' \
    'func main() { etcdmain.Main(os.Args) }' >"$work/main.go"
  (cd "$work" && "$GO_MODULES" mod init envlink-testbed/etcd >/dev/null 2>&1 \
     && GOFLAGS=-mod=mod "$GO_MODULES" get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" \
     && GOFLAGS=-mod=mod "$GO_MODULES" mod tidy) >"$work/tidy.log" 2>&1 \
    || { tail -n 30 "$work/tidy.log" >&2; die "resolving go.etcd.io/etcd/server/v3@v$ETCD_VERSION failed (log: $work/tidy.log)"; }
  log "modules resolved in $((SECONDS - t0))s; building etcd $ETCD_VERSION"
  (cd "$work" && "$GO_MODULES" build -ldflags "-s -w" -o "$dir/etcd.tmp" .) \
    || die "go build of etcd $ETCD_VERSION failed"
  mv -f "$dir/etcd.tmp" "$dir/etcd"
  cp "$work/go.mod" "$dir/go.mod"; cp "$work/go.sum" "$dir/go.sum"
  etcd_ok "$dir/etcd" || die "built etcd does not report $ETCD_VERSION: $("$dir/etcd" --version 2>&1 | head -n1 || true)"
  log "etcd $ETCD_VERSION built in $((SECONDS - t0))s: $dir/etcd"
  rm -rf "$work"
}

# build [--check]: build (or with --check only verify) the selected API server.
cmd_build() {
  if [[ "${1:-}" == --check ]]; then
    binary_ok
    return
  fi
  if binary_ok; then
    log "cached Kubernetes $KUBE_VERSION OK: $APISERVER_BIN ($("$APISERVER_BIN" --version))"
    remove_work_dir   # leftovers of an interrupted build
    [[ "$K8S_SELECT" == 1.20 ]] || maybe_remove_go_buildcache
    return 0
  fi
  [[ -e "$APISERVER_BIN" ]] && log "cached binaries in $CACHE_DIR are incomplete or broken; rebuilding"
  if [[ "$K8S_SELECT" == 1.20 ]]; then
    build_1_20
  else
    build_current
    maybe_remove_go_buildcache
  fi
}

# Prints the paths a harness needs for the selected version (shell-sourceable).
cmd_paths() {
  echo "KUBE_VERSION=$KUBE_VERSION"
  echo "KUBE_APISERVER=$APISERVER_BIN"
  echo "KUBECTL=${KUBECTL_BIN:-$(command -v kubectl || echo kubectl)}"
  echo "ETCD=$(command -v "$(etcd_cmd)" || etcd_cmd)"
  echo "HELM=$HELM_BIN"
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
  launch "$st/etcd.pid" "$st/etcd.log" "$(cat "$st/etcd.bin")" "${args[@]}"
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
  [[ -f "$st/apiserver.args" && -f "$st/ports" && -f "$st/apiserver.bin" ]] \
    || die "$st was not initialised by '$0 start'"
  # The binary `start` chose (ENVLINK_K8S at that time), whatever the environment says now.
  APISERVER_BIN=$(cat "$st/apiserver.bin")
  [[ -x "$APISERVER_BIN" ]] || die "kube-apiserver $APISERVER_BIN is gone; run '$0 build'"
  pid_alive "$st/kube-apiserver.pid" && die "kube-apiserver already running (pid $(cat "$st/kube-apiserver.pid"))"
  pid_alive "$st/etcd.pid" || die "etcd is not running in $st"
  # shellcheck disable=SC1091
  source "$st/ports"
  local -a args
  mapfile -t args <"$st/apiserver.args"
  local token
  token=$(cat "$st/token")

  log "starting kube-apiserver on $APISERVER_URL ($("$APISERVER_BIN" --version))"
  printf '\n===== start %s =====\n' "$(date -u +%FT%TZ)" >>"$st/kube-apiserver.log"
  launch "$st/kube-apiserver.pid" "$st/kube-apiserver.log" "$APISERVER_BIN" "${args[@]}"

  # /readyz (not /healthz) also waits for the post-start hooks, e.g. RBAC bootstrap roles
  # and the default/kube-system namespaces, so the server is fully usable when it answers ok.
  local deadline=$((SECONDS + READY_TIMEOUT)) out=""
  while :; do
    out=$(curl -sS -k --max-time 3 -H "Authorization: Bearer $token" \
            "$APISERVER_URL/readyz" 2>&1) || true
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
  # serving cert has the bind address (127.0.0.1 or ::1) as an IP SAN, so clients can verify TLS
  # against the CA instead of skipping verification.
  if [[ ! -s "$st/ca.crt" ]]; then
    awk '/-----BEGIN CERTIFICATE-----/ { n++; buf = "" } { buf = buf $0 "\n" }
         /-----END CERTIFICATE-----/ { last = buf } END { printf "%s", last }' \
        "$st/certs/apiserver.crt" >"$st/ca.crt"
    [[ -s "$st/ca.crt" ]] || die "could not extract the CA from $st/certs/apiserver.crt"
  fi
  curl -fsS --max-time 5 --cacert "$st/ca.crt" -H "Authorization: Bearer $token" \
       "$APISERVER_URL/readyz" >/dev/null \
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
  need_cmd "$(etcd_cmd)" curl openssl ss
  binary_ok || die "Kubernetes $KUBE_VERSION not built or broken in $CACHE_DIR; run 'ENVLINK_K8S=$K8S_SELECT $0 build'"
  if pid_alive "$st/etcd.pid" || pid_alive "$st/kube-apiserver.pid"; then
    die "testbed in $st is already running; '$0 stop $st' first"
  fi

  # Fresh state: remove everything a previous run may have left (only our own entries, in
  # case STATE_DIR holds other files of the caller).
  rm -rf "$st/etcd-data" "$st/certs"
  rm -f "$st"/{etcd,kube-apiserver}.{log,pid,args} "$st"/apiserver.{args,bin} "$st"/etcd.bin \
        "$st"/{kubeconfig,env,ports,token,token.csv,ca.crt,sa.key,sa.pub}
  mkdir -p "$st/certs"
  echo "$APISERVER_BIN" >"$st/apiserver.bin"
  command -v "$(etcd_cmd)" >"$st/etcd.bin"

  # IP family of the API server (ENVLINK_TESTBED_IP_FAMILY=ipv4|ipv6, default ipv4).
  # ipv6: bound to ::1, Services from an IPv6 ULA range, advertised on an address of the
  # documentation range 2001:db8::/32 (nothing connects to it) - a single-stack IPv6
  # cluster as far as Services go. etcd stays on 127.0.0.1 (storage, invisible to clients).
  local family=${ENVLINK_TESTBED_IP_FAMILY:-ipv4} host advertise cidr
  case "$family" in
    ipv4) host=127.0.0.1; advertise=$ADVERTISE_ADDRESS; cidr=$SERVICE_CIDR ;;
    ipv6)
      [[ "$K8S_SELECT" == current ]] || die "ENVLINK_TESTBED_IP_FAMILY=ipv6 needs ENVLINK_K8S=current"
      host=::1; advertise=$ADVERTISE_ADDRESS_V6; cidr=$SERVICE_CIDR_V6 ;;
    *) die "ENVLINK_TESTBED_IP_FAMILY=$family: expected ipv4 or ipv6" ;;
  esac
  local url_host=$host
  [[ "$host" == *:* ]] && url_host="[$host]"

  # Ports: free loopback ports, chosen once and stored so restarts reuse them (a restarted
  # API server must come back on the same URL the tests and webhook registrations use).
  local etcd_port etcd_peer_port apiserver_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port "$etcd_port")
  apiserver_port=$(free_port "$etcd_port $etcd_peer_port" "$host")
  cat >"$st/ports" <<EOF
ETCD_PORT=$etcd_port
ETCD_PEER_PORT=$etcd_peer_port
APISERVER_PORT=$apiserver_port
APISERVER_URL=https://$url_host:$apiserver_port
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
--bind-address=$host
--secure-port=$apiserver_port
--advertise-address=$advertise
--cert-dir=$st/certs
--token-auth-file=$st/token.csv
--authorization-mode=RBAC
--service-account-issuer=https://kubernetes.default.svc.cluster.local
--service-account-key-file=$st/sa.pub
--service-account-signing-key-file=$st/sa.key
--service-cluster-ip-range=$cidr
--disable-admission-plugins=ServiceAccount
--enable-aggregator-routing=true
--allow-privileged=true
--profiling=false
--v=1
EOF
  # 1.20 only: the EphemeralContainers feature gate (alpha, off by default there), so the
  # pods/ephemeralcontainers subresource is served and its review (kind EphemeralContainers
  # in 1.20/1.21) reaches envlink's /validate. GA (no gate) in the current version. A
  # --feature-gates in ENVLINK_TESTBED_APISERVER_ARGS replaces this one (last one wins).
  if [[ "$K8S_SELECT" == 1.20 ]]; then
    printf '%s\n' "--feature-gates=EphemeralContainers=true" >>"$st/apiserver.args"
  fi
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
    server: https://$url_host:$apiserver_port
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
APISERVER_URL=https://$url_host:$apiserver_port
APISERVER_PORT=$apiserver_port
APISERVER_TOKEN=$token
APISERVER_CA=$st/ca.crt
KUBE_VERSION=$KUBE_VERSION
KUBECTL=${KUBECTL_BIN:-$(command -v kubectl || echo kubectl)}
IP_FAMILY=$family
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
    # IPv6: ::1 must be up (the IPv6 API server binds it) and the IPv6 Service range and
    # documentation range unroutable.
    if [[ "$(ip -6 -o addr show dev lo 2>/dev/null)" != *"::1/128"* ]]; then
      echo "[testbed] ERROR: ::1 is not configured on lo inside the netns" >&2; exit 1
    fi
    if ip -6 route get fd00:10:96::1 >/dev/null 2>&1 || ip -6 route get 2001:db8::10 >/dev/null 2>&1; then
      echo "[testbed] ERROR: an IPv6 Service or documentation address is routable inside the netns" >&2; exit 1
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
    build-helm)        cmd_build_helm "$@" ;;
    build-etcd)        cmd_build_etcd "$@" ;;
    paths)             cmd_paths "$@" ;;
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
