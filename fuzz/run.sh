#!/usr/bin/env bash
# Bounded fuzzing of every target in fuzz/: `bash fuzz/run.sh [SECONDS]` (default 60 per
# target). Installs cargo-fuzz when missing. Works on the stable toolchain
# (RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags). New corpus entries go to
# fuzz/corpus/<target> (not committed); the committed seeds are read from fuzz/seeds/<target>.
# Exits non-zero when any target crashes; the input is in fuzz/artifacts/<target>/ and the
# command to reproduce it is printed.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: fuzz/run.sh [SECONDS per target]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi
# aws-lc-sys (the TLS crypto) builds AWS-LC with cmake when a sanitizer is on, as here.
if ! command -v cmake >/dev/null 2>&1; then
    echo "cmake is missing (aws-lc-sys needs it under the sanitizer): installing it (apt)"
    apt-get update -qq && apt-get install -y -qq cmake
fi
# The stable toolchain refuses -Z flags unless told otherwise; nightly ignores this.
export RUSTC_BOOTSTRAP=1

# -O: optimised, with debug assertions (overflow checks) still on.
cargo fuzz build -O

dict_for() {
    case "$1" in
        config|services_file) echo "yaml.dict" ;;
        *) echo "json.dict" ;;
    esac
}

failed=()
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target" "seeds/$target"
    echo "==== fuzz: $target for ${seconds}s ===="
    # -rss_limit_mb: an input that makes envlink use more than 2 GiB is a finding.
    # -timeout: one input taking more than 10 s is a finding (the webhook answers in 8 s).
    # -max_len: reviews are kilobytes; 64 KiB leaves room for large Pods.
    if ! cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -dict="$(dict_for "$target")" -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    for target in "${failed[@]}"; do
        for artifact in artifacts/"$target"/*; do
            [ -e "$artifact" ] || continue
            echo "  reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O $target $artifact)" >&2
        done
    done
    exit 1
fi
echo "fuzz: no crash in $(cargo fuzz list | wc -l) targets (${seconds}s each)"
