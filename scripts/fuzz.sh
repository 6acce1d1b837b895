#!/usr/bin/env bash
# Fuzzes each target in fuzz/ (cargo-fuzz, libFuzzer) for a bounded time, starting from
# the committed seeds in fuzz/corpus/<target>/; fails on the first crash, leak or timeout.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 10 s, all targets)
#
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's nightly
# flags. Inputs a run finds go to fuzz/corpus-run/<target>/ (not committed); a crash
# is saved under fuzz/artifacts/<target>/ and printed with the command to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-10}"
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wisp-target-fuzz}"

if ! command -v cargo-fuzz >/dev/null && [[ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]]; then
    echo "--- installing cargo-fuzz (crates.io)"
    cargo install --locked cargo-fuzz
fi
export PATH="$HOME/.cargo/bin:$PATH"

cd fuzz
if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
failed=()
for t in "${targets[@]}"; do
    echo "--- fuzz $t (${secs} s)"
    mkdir -p "corpus-run/$t" "artifacts/$t"
    # One target at a time, one job, low priority: the machine is shared.
    if ! nice -n 19 cargo fuzz run "$t" "corpus-run/$t" "corpus/$t" -- \
        -max_total_time="$secs" -jobs=1 -workers=1 -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=4096 2>"artifacts/$t.log"; then
        grep -E "panicked at|^(SUMMARY|==[0-9]+==ERROR)|Reproduce with" -A2 "artifacts/$t.log" >&2 || true
        echo "fuzz: $t failed; its log is fuzz/artifacts/$t.log" >&2
        failed+=("$t")
        continue
    fi
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|DONE" "artifacts/$t.log" || true
done
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${secs} s without a crash"
