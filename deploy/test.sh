#!/usr/bin/env bash
# Runs tapflow's whole test suite on a fresh Debian machine with Rust: installs what is
# missing, checks formatting and lints, builds, runs unit and integration tests (real
# processes, real ZeroMQ, real captures from ../shared/pcaps when present), then a short
# bounded fuzzing pass over every fuzz target.
# Usage: deploy/test.sh            (FUZZ_SECONDS=0 skips fuzzing; default 30 s per target)
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh --test
export CARGO_TERM_COLOR=never

cargo fmt --all --check
# Every declared dependency is used, and no two modules of a crate use each other.
python3 .ci/unused-deps.py
python3 .ci/module-cycles.py
python3 .ci/test-convention.py
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
cargo nextest run --workspace --no-fail-fast --success-output final

# Every decoder has a fuzz target; CI runs each for a bounded time (longer runs by hand:
# fuzz/README.md). Stable Rust, no sanitizer (-s none).
fuzz_seconds=${FUZZ_SECONDS:-30}
if ((fuzz_seconds > 0)); then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
    fuzz/run.sh "$fuzz_seconds"
fi
echo "tapflow: all tests passed"
