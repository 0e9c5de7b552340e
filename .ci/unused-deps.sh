#!/usr/bin/env bash
# Fails on a dependency that a Cargo.toml declares but no source uses (envlink's and the fuzz
# crate's, dev-dependencies included): cargo-machete, which reads the sources as text (no
# build; a few seconds). A dependency it cannot see used (one only a macro names, say) is
# listed with its reason under `[package.metadata.cargo-machete] ignored` in that Cargo.toml.
#
# cargo-machete is built once per machine and version into
# ~/.cache/envlink-tools/cargo-machete-VERSION (cargo install, a few minutes the first time);
# changing the version below builds the new one beside the old.
# Run alone: bash .ci/unused-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MACHETE_VERSION=0.9.2
root="${HOME}/.cache/envlink-tools/cargo-machete-${MACHETE_VERSION}"
machete="${root}/bin/cargo-machete"
if [[ ! -x "$machete" ]]; then
    cargo install --locked --version "$MACHETE_VERSION" --root "$root" cargo-machete
fi
# --with-metadata: names from `cargo metadata`, so renamed crates are not reported wrongly;
# --skip-target-dir: build outputs hold Cargo.toml files of their own.
"$machete" --with-metadata --skip-target-dir
