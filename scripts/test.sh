#!/usr/bin/env bash
# Runs Wisp's whole test suite: unit tests, the manifest snapshot cases, the executor's
# component tests and the integration tests that start the real `wisp` binary.
# Installs what a fresh machine with a Rust toolchain lacks (the wasm32-wasip2 target).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi

# Guest components (examples, test fixtures) share one target dir beside the main one.
: "${WISP_GUEST_TARGET_DIR:=${CARGO_TARGET_DIR:-$PWD/target}/guests}"
export WISP_GUEST_TARGET_DIR

# The Lambda bootstraps against a fake Runtime API (seconds; Python and Node.js needed).
if command -v node >/dev/null 2>&1; then
    python3 runtimes/selftest.py >/dev/null
fi

if cargo nextest --version >/dev/null 2>&1; then
    # (The workspace has no doc tests, which nextest does not run.)
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
