# Shared settings of scripts/bench/*.sh (sourced). Everything they make lives in git-ignored folders: the Python venv
# in .stack/bench-venv, the corpus and its sources in .bench/.
BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_DIR="$BENCH_ROOT/.bench"
BENCH_VENV="$BENCH_ROOT/.stack/bench-venv"
PILLOW_VERSION="13.0.0"        # PyPI wheel, bundles libjpeg-turbo with SIMD: the reference of the codec benchmark
SCIKIT_IMAGE_VERSION="0.26.0"  # its wheel's skimage/data/*: sample photos for the corpus

blog() { printf '[bench] %s\n' "$*" >&2; }

# Creates the venv with the pinned Pillow once; a second run only checks the stamp.
bench_venv() {
  local want="pillow==$PILLOW_VERSION" stamp="$BENCH_VENV/.installed"
  if [[ -x "$BENCH_VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  blog "venv: installing $want into $BENCH_VENV"
  [[ -x "$BENCH_VENV/bin/python" ]] || python3 -m venv "$BENCH_VENV"
  "$BENCH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$want"
  "$BENCH_VENV/bin/python" -c 'import PIL.Image'
  printf '%s' "$want" >"$stamp"
}
