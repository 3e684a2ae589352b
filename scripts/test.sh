#!/usr/bin/env bash
# The test command: installs what the tests need, then format check, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LOUPE_TEST_PYTHON="$PWD/.venv/bin/python"
.venv/bin/cfn-lint template.yaml
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
