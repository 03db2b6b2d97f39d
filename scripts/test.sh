#!/usr/bin/env bash
# The test command: installs what is missing (idempotent), then runs the same checks as CI:
# formatting, clippy with warnings as errors, and the whole test suite (unit, integration with
# real files and real swtpm TPMs, CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --openvino  # the OpenVINO wheel (.venv/) for examples/host-server tests
export TSS2_LOG=all+none
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
