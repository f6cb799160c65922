#!/usr/bin/env bash
# Builds every binary of the workspace (debug profile) in one cargo invocation and prints the folder holding them.
# Every script that needs one of them (the stack's S3 server, the local runner, the admin, the CLI, the benchmarks'
# dev runs) goes through here, and tests/tests/cli.rs builds the same way: cargo resolves dependency features per
# set of selected packages, so a `cargo build -p X` would compile X's dependency tree again with X's features alone,
# while `--workspace` gives every build, `cargo test --workspace`'s included, one feature set and one build of each
# dependency. (proptest is a normal dependency of imgpipe-tests for that reason: its features are part of the set.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --locked -q --workspace --bins
echo "${CARGO_TARGET_DIR:-$PWD/target}/debug"
