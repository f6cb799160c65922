#!/usr/bin/env bash
# Builds the codec benchmark's corpus, idempotently (a second run checks a stamp and returns):
#   scripts/bench/corpus.sh          -> .bench/corpus        (1-24 MP; wallpapers from Debian + scikit-image samples)
#   scripts/bench/corpus.sh --short  -> .bench/corpus-short  (1 MP and small edge cases; scikit-image samples only)
# Sources come from package registries only: `apt-get download plasma-workspace-wallpapers` (full corpus) and
# `pip download scikit-image` (its wheel's skimage/data/); ICC profiles from tests/images/colour/profiles. The images
# are made by scripts/bench/corpus.py (Pillow).
# Prints the corpus folder.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

short=""
[[ "${1:-}" == "--short" ]] && short="--short"
out="$BENCH_DIR/corpus${short:+-short}"
src="$BENCH_DIR/src"
bench_venv
recipe="$(cat "$BENCH_ROOT/scripts/bench/corpus.py" "$BENCH_ROOT/scripts/bench/common.sh" | sha256sum | cut -c1-16)$short"
if [[ -f "$out/.built" && "$(cat "$out/.built")" == "$recipe" ]]; then
  blog "corpus: present ($out)"
  echo "$out"
  exit 0
fi
mkdir -p "$src"

if [[ ! -d "$src/skimage/skimage/data" ]]; then
  blog "sources: scikit-image $SCIKIT_IMAGE_VERSION wheel (PyPI)"
  rm -rf "$src/wheel" && mkdir -p "$src/wheel"
  "$BENCH_VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
    -d "$src/wheel" "scikit-image==$SCIKIT_IMAGE_VERSION"
  "$BENCH_VENV/bin/python" - "$src/wheel" "$src/skimage.tmp" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/scikit_image-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("skimage/data/")])
PY
  rm -rf "$src/skimage" && mv "$src/skimage.tmp" "$src/skimage" && rm -rf "$src/wheel"
fi

if [[ -z "$short" && ! -d "$src/wallpapers/usr/share/wallpapers" ]]; then
  blog "sources: plasma-workspace-wallpapers (Debian, ~94 MB)"
  rm -rf "$src/deb" && mkdir -p "$src/deb"
  (cd "$src/deb" && { apt-get download plasma-workspace-wallpapers >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get download plasma-workspace-wallpapers >/dev/null; }; })
  rm -rf "$src/wallpapers.tmp" && dpkg-deb -x "$src"/deb/plasma-workspace-wallpapers_*.deb "$src/wallpapers.tmp"
  rm -rf "$src/wallpapers" && mv "$src/wallpapers.tmp" "$src/wallpapers" && rm -rf "$src/deb"
fi

blog "corpus: building $out"
rm -rf "$out.tmp"
"$BENCH_VENV/bin/python" "$BENCH_ROOT/scripts/bench/corpus.py" --sources "$src" \
  --profiles "$BENCH_ROOT/tests/images/colour/profiles" --out "$out.tmp" $short
printf '%s' "$recipe" >"$out.tmp/.built"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
