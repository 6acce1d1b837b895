#!/usr/bin/env bash
# Runs Wisp's whole test suite: unit tests, the manifest snapshot cases, the executor's
# component tests and the integration tests that start the real `wisp` binary.
# Installs what a fresh machine with a Rust toolchain lacks (the wasm32-wasip2 target).
#
#   bash scripts/test.sh                 everything
#   bash scripts/test.sh -p wisp-events  one crate (any cargo nextest / cargo test flags)
#   bash scripts/test.sh --no-run        build the tests only
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi

# Guest components (examples, test fixtures) share one target dir beside the main one.
target="${CARGO_TARGET_DIR:-$PWD/target}"
: "${WISP_GUEST_TARGET_DIR:=$target/guests}"
export WISP_GUEST_TARGET_DIR

# Only the crates asked for, if any were; the whole workspace otherwise.
scope=(--workspace)
no_run=false
for a in "$@"; do
    case "$a" in
        -p | --package | -p* | --package=*) scope=() ;;
        --no-run) no_run=true ;;
    esac
done

# The Lambda bootstraps against a fake Runtime API (seconds), the Rust `provided` one
# included. Under CI=true a skipped case fails the run.
if ! $no_run && ((${#scope[@]})); then
    if command -v node >/dev/null 2>&1 || [[ "${CI:-}" == true ]]; then
        echo "--- runtimes/selftest.py: the Lambda bootstraps against a fake Runtime API"
        CARGO_TARGET_DIR="$target/native" cargo build --release --quiet \
            --manifest-path tests/native/rust-provided/Cargo.toml
        WISP_RUST_BOOTSTRAP="$target/native/release/bootstrap" python3 runtimes/selftest.py --no-bench
    else
        echo "skipping runtimes/selftest.py: Node.js is not installed" >&2
    fi
fi

if cargo nextest --version >/dev/null 2>&1; then
    # (The workspace has no doc tests, which nextest does not run.)
    cargo nextest run "${scope[@]}" --no-fail-fast "$@"
else
    cargo test "${scope[@]}" --no-fail-fast "$@"
fi
