#!/usr/bin/env bash
# bench/certs.sh DIR — a throw-away CA (DIR/ca.crt) and a server certificate for 127.0.0.1
# and localhost signed by it (DIR/tls.crt, DIR/tls.key; ECDSA P-256), for bench/load.sh and
# bench/memory.sh. (A self-signed certificate used directly is refused by rustls clients:
# CaUsedAsEndEntity.)
set -euo pipefail
dir=$1
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=envlink-bench-ca -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj /CN=envlink-bench -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
  'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,DNS:localhost' >"$dir/tls.ext"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 2 -extfile "$dir/tls.ext" -out "$dir/tls.crt" 2>/dev/null
chmod 600 "$dir/ca.key" "$dir/tls.key"
