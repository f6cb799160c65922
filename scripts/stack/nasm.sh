#!/usr/bin/env bash
# Installs nasm (Debian package) if it is missing, idempotently. mozjpeg-sys assembles libjpeg-turbo's x86-64 SIMD
# code with it; without nasm the build still succeeds but silently falls back to plain C (about 2-3× slower).
# arm64 builds need no nasm (NEON code is C intrinsics and GNU assembler).
set -euo pipefail
if command -v nasm >/dev/null; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "[nasm] nasm is missing and apt-get is not available: install nasm" >&2; exit 1; }
SUDO=""
[[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
echo "[nasm] installing nasm (apt-get)" >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -q nasm >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q nasm >/dev/null; }
nasm -v >&2
