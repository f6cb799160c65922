#!/usr/bin/env bash
# Mutation check: every tests/mutations/*.patch breaks the code in a way a test once missed, and names (in a
# `# test: <cargo test arguments>` header line) the test that must now catch it. For each patch this applies it to
# a scratch copy of the tree, runs that test, and fails unless the test FAILS. Optional `# env: NAME=value` lines
# set variables for the test.
#
#   scripts/check-mutations.sh [PATCH...]    (default: every patch; run through make, which exports .stack/env)
#
# Headers select with `--workspace` (`--test NAME`, or `--lib FILTER` for a crate's unit tests), not `-p PACKAGE`:
# cargo resolves dependency features per set of selected packages, so a `-p` build compiles the dependencies again
# with that package's features alone, while `--workspace` reuses the test build's (scripts/bins.sh).
# The scratch copy lives in the cargo target directory and shares it, so only the crates a patch touches rebuild.
# Its files are updated by content (a changed file gets a new mtime, an unchanged one keeps its own), and every
# patch is reverted with `git apply -R`, so cargo never reuses a build of a mutated file.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${IMGPIPE_SQS_ENDPOINT:?run through make check-mutations (it exports .stack/env)}"

target="$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")"
scratch="$target/mutation-tree"
export CARGO_TARGET_DIR="$target"
# git apply must patch the scratch copy, never the repository the target directory may sit in.
export GIT_CEILING_DIRECTORIES="$target"
mkdir -p "$scratch"

# The tree as it is on disk (tracked and new, unignored files), copied into the scratch directory by content.
# Cargo names a workspace crate's build after its path relative to the workspace, so the scratch copy's crates
# would share (and overwrite) the real tree's builds, and each side would judge freshness by the other's files.
# A per-package profile override in the copy's Cargo.toml gives its workspace crates builds of their own; the
# registry dependencies stay shared.
python3 - "$root" "$scratch" <<'PY'
import os, re, subprocess, sys, shutil
root, scratch = sys.argv[1], sys.argv[2]
files = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       check=True, capture_output=True).stdout.decode().split("\0")
wanted = {f for f in files if f and os.path.isfile(os.path.join(root, f))}
members = [m for f in sorted(wanted) if f.endswith("Cargo.toml") and f != "Cargo.toml"
           for m in re.findall(r'^name = "([^"]+)"', open(os.path.join(root, f)).read(), re.M)[:1]]
separate = "".join(f'\n[profile.{p}.package.{m}]\ncodegen-units = 255\n' for p in ("dev", "test") for m in members)
for f in wanted:
    src, dst = os.path.join(root, f), os.path.join(scratch, f)
    data = open(src, "rb").read()
    if f == "Cargo.toml":
        data += ("\n# check-mutations: builds of their own for the scratch copy's crates\n" + separate).encode()
    if os.path.isfile(dst) and open(dst, "rb").read() == data:
        continue
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    open(dst, "wb").write(data)  # a new mtime: cargo rebuilds what depends on it
    shutil.copymode(src, dst)
for d, _, names in os.walk(scratch):
    for n in names:
        rel = os.path.relpath(os.path.join(d, n), scratch)
        if rel not in wanted:
            os.remove(os.path.join(d, n))
PY

patches=("$@")
[[ ${#patches[@]} -gt 0 ]] || patches=(tests/mutations/*.patch)
failures=()
started=$SECONDS
for patch in "${patches[@]}"; do
  patch="$(realpath "$patch")"
  name="$(basename "$patch" .patch)"
  read -r -a test_args <<<"$(sed -n 's/^# test: //p' "$patch" | head -n 1)"
  mapfile -t test_env < <(sed -n 's/^# env: //p' "$patch")
  if [[ ${#test_args[@]} -eq 0 ]]; then
    echo "[mutations] $name: no '# test: <cargo test arguments>' header line" >&2
    failures+=("$name (no test named)")
    continue
  fi
  if ! (cd "$scratch" && git apply --check "$patch" 2>/dev/null); then
    echo "[mutations] $name: THE PATCH NO LONGER APPLIES. The code it mutates has moved or changed. Update" >&2
    echo "  $patch so that it breaks the same behaviour again (its header says which), and check that" >&2
    echo "  'cargo test ${test_args[*]}' still fails with it applied. git apply says:" >&2
    (cd "$scratch" && git apply --check "$patch" 2>&1 | sed 's/^/    /' >&2) || true
    failures+=("$name (no longer applies)")
    continue
  fi
  t0=$SECONDS
  (cd "$scratch" && git apply "$patch")
  log="$target/mutation-$name.log"
  verdict=""
  if ! (cd "$scratch" && cargo test --locked --no-run "${test_args[@]}") >"$log" 2>&1; then
    verdict="the mutated code does not build (see $log): fix the patch"
  elif (cd "$scratch" && env "${test_env[@]}" timeout 1800 cargo test --locked "${test_args[@]}") >>"$log" 2>&1; then
    verdict="NOT CAUGHT: 'cargo test ${test_args[*]}' passed on the mutated code (see $log)"
  elif ! grep -q '^test result: FAILED' "$log"; then
    verdict="the test run failed without a test failing (timeout or crash; see $log)"
  fi
  (cd "$scratch" && git apply -R "$patch")
  if [[ -n $verdict ]]; then
    echo "[mutations] $name: $verdict ($((SECONDS - t0)) s)" >&2
    failures+=("$name")
  else
    echo "[mutations] $name: caught by ${test_args[*]} ($((SECONDS - t0)) s)"
  fi
done

echo "[mutations] ${#patches[@]} patch(es) in $((SECONDS - started)) s"
if [[ ${#failures[@]} -gt 0 ]]; then
  printf '[mutations] FAILED: %s\n' "${failures[@]}" >&2
  exit 1
fi
