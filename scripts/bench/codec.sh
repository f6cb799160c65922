#!/usr/bin/env bash
# The codec benchmark (make bench-codec): builds the corpus (cached), then runs `imgpipe-bench codec`, which times
# imgpipe's compress and Pillow's equivalent on every file, scores both outputs, and prints the table and peak RSS.
#   scripts/bench/codec.sh           full corpus (1-24 MP), release build (what Lambda runs), best of 5
#   scripts/bench/codec.sh --short   1 MP corpus, dev build (reuses `make test`'s), one run each: CI keeps it working
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$BENCH_ROOT"

short=""
[[ "${1:-}" == "--short" ]] && short="--short"
bash scripts/stack/nasm.sh # libjpeg-turbo's x86-64 SIMD; without nasm the build silently falls back to C
corpus="$(bash scripts/bench/corpus.sh $short)"
if [[ -n "$short" ]]; then
  bench="$(bash scripts/bins.sh)/imgpipe-bench" # the dev build `make test` made (scripts/bins.sh)
else
  cargo build --locked -q --release -p imgpipe-bench
  bench="${CARGO_TARGET_DIR:-$PWD/target}/release/imgpipe-bench"
fi
"$bench" codec --corpus "$corpus" --python "$BENCH_VENV/bin/python" $short
