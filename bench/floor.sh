#!/usr/bin/env bash
# bench/floor.sh — what envlink's transport costs without the review's own work.
#
# Usage: bench/floor.sh [bench/load.sh options, e.g. -s s1,s2 -P h1,h2 --phases full -d 10]
#
# Builds HEAD twice: as it is, and with bench/floor.patch applied (in a temporary git
# worktree; uncommitted changes are not in either build). The patched build answers its first
# review in full and every later one with a copy of that answer and its log fields, without
# decoding, deciding or encoding it; TLS, HTTP/1.1 and h2, the router, the body limits and
# budgets, the metrics and the `review answered` line are envlink's own. Then bench/load.sh
# runs it as "envlink" with HEAD as "base" (--compare) beside nginx: the floor's CPU per
# answer is the transport's, HEAD's minus the floor's is the review's own work
# (BENCHMARKS.md, "The transport alone").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/envlink-floor.XXXXXX")
cleanup() {
  git -C "$ROOT" worktree remove --force "$WORK/src" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

REV=$(git -C "$ROOT" rev-parse --short HEAD)
git -C "$ROOT" worktree add --detach "$WORK/src" HEAD >/dev/null
git -C "$WORK/src" apply "$ROOT/bench/floor.patch"
echo "[floor] building $REV with bench/floor.patch" >&2
CARGO_TARGET_DIR="$TARGET/floor" cargo build --release --locked --manifest-path "$WORK/src/Cargo.toml"
cp "$TARGET/floor/release/envlink" "$WORK/envlink-floor"
echo "[floor] building $REV" >&2
git -C "$ROOT" worktree add --detach "$WORK/head" HEAD >/dev/null
CARGO_TARGET_DIR="$TARGET" cargo build --release --locked --manifest-path "$WORK/head/Cargo.toml"
cp "$TARGET/release/envlink" "$WORK/envlink-head"
git -C "$ROOT" worktree remove --force "$WORK/head" >/dev/null

ENVLINK_BIN="$WORK/envlink-floor" ENVLINK_REV="$REV + bench/floor.patch" \
  bash "$ROOT/bench/load.sh" --compare "$WORK/envlink-head" "$@"
