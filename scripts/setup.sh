#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine: system packages, and a Python
# virtualenv (.venv) with the real Lambda runtime client and EMF libraries. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install a Rust toolchain >= 1.85 (rustup) first" >&2
  exit 1
fi

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v cc >/dev/null || need_apt+=(gcc)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The sample function's packages, and the tools the tests use. pip skips what is already there.
.venv/bin/pip install -q --disable-pip-version-check \
  -r examples/python/requirements.txt -r tests/requirements.txt
