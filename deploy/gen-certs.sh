#!/usr/bin/env bash
# gen-certs.sh — TLS for envlink installed from the plain manifests in deploy/.
#
#   deploy/gen-certs.sh secret   make a CA and a serving certificate with openssl and store
#                                them in Secret envlink-tls (tls.crt, tls.key, ca.crt);
#                                keeps an existing Secret unless --force is given
#   deploy/gen-certs.sh patch    copy the Secret's ca.crt into the caBundle of both webhook
#                                configurations (run it after `kubectl apply -f deploy/`)
#   deploy/gen-certs.sh all      both
#
# Options: -n NAMESPACE (default envlink), -s SERVICE (default envlink), -w WEBHOOK
# configuration name (default envlink), -d DAYS validity (default 3650), --force.
# Needs openssl and kubectl (with the current kubeconfig context).
#
# Rotation: `deploy/gen-certs.sh --force all`. envlink re-reads the mounted files, so the new
# certificate is served once the kubelet has refreshed the Secret volume (about a minute);
# the CA changes at the same moment in the caBundles, so expect a short window of TLS errors
# (fail-closed) — prefer cert-manager with the Helm chart for rotation without that window.
set -euo pipefail

ns=envlink svc=envlink webhook=envlink days=3650 force=0
cmd=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) ns=$2; shift 2 ;;
    -s) svc=$2; shift 2 ;;
    -w) webhook=$2; shift 2 ;;
    -d) days=$2; shift 2 ;;
    --force) force=1; shift ;;
    secret|patch|all) cmd=$1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gen-certs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$cmd" ] || { echo "gen-certs.sh: say secret, patch or all (see --help)" >&2; exit 2; }
secret="$svc-tls"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make_secret() {
  if [ "$force" = 0 ] && kubectl -n "$ns" get secret "$secret" >/dev/null 2>&1; then
    echo "Secret $ns/$secret exists: kept (use --force to replace it)"
    return
  fi
  local dir=$tmp
  # The CA: self-signed, only ever used to sign this webhook's certificate.
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -subj "/CN=$svc-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # The serving certificate, for the names the API server uses to reach the Service.
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$dir/tls.key" -out "$dir/tls.csr" \
    -subj "/CN=$svc.$ns.svc" 2>/dev/null
  cat >"$dir/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$svc,DNS:$svc.$ns,DNS:$svc.$ns.svc,DNS:$svc.$ns.svc.cluster.local
EXT
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -sha256 -days "$days" -extfile "$dir/ext.cnf" -out "$dir/tls.crt" 2>/dev/null
  openssl verify -CAfile "$dir/ca.crt" "$dir/tls.crt" >/dev/null
  kubectl -n "$ns" create secret generic "$secret" --type=kubernetes.io/tls \
    --from-file=tls.crt="$dir/tls.crt" --from-file=tls.key="$dir/tls.key" \
    --from-file=ca.crt="$dir/ca.crt" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  echo "Secret $ns/$secret written (CA and certificate valid for $days days)"
}

patch_webhooks() {
  local ca
  ca=$(kubectl -n "$ns" get secret "$secret" -o jsonpath='{.data.ca\.crt}')
  [ -n "$ca" ] || { echo "gen-certs.sh: Secret $ns/$secret has no ca.crt" >&2; exit 1; }
  local kind
  for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
    if ! kubectl get "$kind" "$webhook" >/dev/null 2>&1; then
      echo "$kind $webhook not found: apply deploy/ first, then run: $0 patch" >&2
      exit 1
    fi
    # A JSON patch per webhook entry (each configuration has exactly one).
    kubectl patch "$kind" "$webhook" --type=json \
      -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca\"}]" >/dev/null
    echo "$kind $webhook: caBundle set"
  done
}

case "$cmd" in
  secret) make_secret ;;
  patch) patch_webhooks ;;
  all) make_secret; patch_webhooks ;;
esac
