#!/usr/bin/env bash
# Idempotent set-up of everything the build, the tests and the demo need on a fresh Debian machine.
# Safe to run repeatedly: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: C toolchain bits for aws-lc-sys, the TPM stack (swtpm + tpm2-tss + tpm2-tools),
# PostgreSQL server binaries (the license server's storage tests start a private server).
# python3-venv: the OpenVINO venv (--openvino). valgrind: the plugin's memcheck test
# (tests/ovms_driver.rs). util-linux + mount: unshare, setpriv, mountpoint and mount for the
# non-root, read-only root file system test (tests/readonly_nonroot.rs).
APT_PACKAGES=(
  build-essential pkg-config cmake clang libclang-dev
  swtpm swtpm-tools tpm2-tools libtss2-dev
  postgresql
  python3 python3-venv
  valgrind
  util-linux mount
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust components used by the checks.
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi
# A Python venv with the OpenVINO runtime from PyPI (demo, examples/host-server tests, the
# OpenVINO part of tests/ovms_driver.rs; scripts/test.sh and scripts/demo.sh pass --openvino).
# Enabled with --openvino or OVSA_WITH_OPENVINO=1. The venv lives in .venv/ (git-ignored).
if [ "${1:-}" = "--openvino" ] || [ "${OVSA_WITH_OPENVINO:-0}" = "1" ]; then
  VENV=".venv"
  if ! "$VENV/bin/python" -c "import openvino, numpy" >/dev/null 2>&1; then
    echo "setup: creating $VENV with openvino (PyPI)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "openvino>=2026.4,<2026.5" "numpy>=1.26"
  fi
  "$VENV/bin/python" -c "import openvino; print('setup: openvino', openvino.__version__)"
  # Real pretrained models for the ONNX tests: the PP-OCR ONNX models shipped inside the PyPI
  # package rapidocr-openvino (wheel downloaded without dependencies, only the models extracted).
  PPOCR="$VENV/ppocr"
  if [ ! -f "$PPOCR/.complete-1.4.4" ]; then
    echo "setup: extracting the PP-OCR ONNX models of rapidocr-openvino 1.4.4 into $PPOCR"
    tmp=$(mktemp -d)
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps "rapidocr-openvino==1.4.4" -d "$tmp"
    "$VENV/bin/python" - "$tmp" "$PPOCR" <<'PY'
import glob, os, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
with zipfile.ZipFile(glob.glob(os.path.join(src, "*.whl"))[0]) as z:
    for n in z.namelist():
        if n.endswith(".onnx"):
            with open(os.path.join(dst, os.path.basename(n)), "wb") as f:
                f.write(z.read(n))
PY
    rm -rf "$tmp"
    touch "$PPOCR/.complete-1.4.4"
  fi
fi
echo "setup: ok"
