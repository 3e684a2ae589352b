#!/usr/bin/env bash
# Builds the loupe Lambda layer: a zip holding extensions/loupe, for x86_64 and/or arm64.
#
#   scripts/build-layer.sh [x86_64|arm64|all]     (default: all)
#
# The binary is static (musl), so it runs on every Lambda runtime (Amazon Linux 2 and 2023)
# with no glibc version to trip over. Cross-compiling the C part of ring uses zig through
# cargo-zigbuild (PyPI: ziglang, cargo-zigbuild), installed here into .venv-build when missing.
# A target whose Rust std cannot be installed is reported and skipped; the rest are built.
# Output: target/layer/loupe-layer-<arch>.zip (zip -9, then recompressed by advzip). Fails when
# a size budget is exceeded.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_BINARY_BYTES=${MAX_BINARY_BYTES:-2621440}   # 2.5 MiB stripped
MAX_ZIP_BYTES=${MAX_ZIP_BYTES:-1258291}         # 1.2 MiB zipped
want=${1:-all}
case "$want" in
  x86_64) archs=(x86_64) ;;
  arm64|aarch64) archs=(arm64) ;;
  all) archs=(x86_64 arm64) ;;
  *) echo "usage: $0 [x86_64|arm64|all]" >&2; exit 2 ;;
esac

# Tools: zip, advzip (advancecomp: recompresses the zip with zopfli, a deflate encoder that
# gets about 3% more out of the same format; any unzip reads it), and zig + cargo-zigbuild in a
# private venv.
missing=()
command -v zip >/dev/null || missing+=(zip)
command -v unzip >/dev/null || missing+=(unzip)
command -v advzip >/dev/null || missing+=(advancecomp)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo-zigbuild >/dev/null; then
  if [ ! -x .venv-build/bin/cargo-zigbuild ]; then
    python3 -m venv .venv-build
    .venv-build/bin/pip install -q --disable-pip-version-check ziglang cargo-zigbuild
  fi
  export PATH="$PWD/.venv-build/bin:$PATH"
fi

out=target/layer
mkdir -p "$out"
built=0
failed=0
for arch in "${archs[@]}"; do
  case "$arch" in
    x86_64) triple=x86_64-unknown-linux-musl ;;
    arm64) triple=aarch64-unknown-linux-musl ;;
  esac
  if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    if ! rustup target add "$triple" >/dev/null 2>&1; then
      echo "build-layer: $arch skipped: the Rust std for $triple is not installed and 'rustup target add $triple' failed" >&2
      failed=$((failed + 1))
      continue
    fi
  fi
  echo "build-layer: building $arch ($triple)" >&2
  # zig links the musl binary as a static non-PIE executable (ELF type EXEC) whatever the code
  # was compiled for, so position-independent code only costs size: compile for a fixed address
  # (x86_64 zip 1,312,676 -> 1,299,833 B).
  # (With --target, RUSTFLAGS reaches only the target's code, not build scripts.)
  RUSTFLAGS="${RUSTFLAGS:-} -C relocation-model=static" \
    cargo zigbuild --release --locked --no-default-features --bin loupe --target "$triple" >&2
  bin="target/$triple/release/loupe"
  stage=$(mktemp -d)
  mkdir -p "$stage/extensions"
  cp "$bin" "$stage/extensions/loupe"
  chmod 755 "$stage/extensions/loupe"
  zipfile="$PWD/$out/loupe-layer-$arch.zip"
  rm -f "$zipfile"
  (cd "$stage" && zip -q -9 -X -r "$zipfile" extensions)
  advzip -q -z -3 "$zipfile"
  unzip -tq "$zipfile" >/dev/null
  rm -rf "$stage"
  bin_size=$(stat -c %s "$bin")
  zip_size=$(stat -c %s "$zipfile")
  # Static means no program interpreter and no shared library needed: nothing of the host's
  # libc (and so no GLIBC_2.x symbol version) can be missing on Lambda.
  if readelf -lW "$bin" | grep -q 'INTERP' || readelf -dW "$bin" | grep -q '(NEEDED)'; then
    echo "build-layer: $arch binary is dynamically linked; it must be static" >&2
    failed=$((failed + 1))
    linkage=dynamic
  else
    linkage=static
  fi
  printf '%-7s binary %8d bytes (%s)  zip %8d bytes  %s\n' "$arch" "$bin_size" "$linkage" "$zip_size" "$zipfile"
  if [ "$bin_size" -gt "$MAX_BINARY_BYTES" ]; then
    echo "build-layer: $arch binary is $bin_size bytes, over the budget of $MAX_BINARY_BYTES" >&2
    failed=$((failed + 1))
  fi
  if [ "$zip_size" -gt "$MAX_ZIP_BYTES" ]; then
    echo "build-layer: $arch zip is $zip_size bytes, over the budget of $MAX_ZIP_BYTES" >&2
    failed=$((failed + 1))
  fi
  built=$((built + 1))
done
[ "$built" -gt 0 ] || { echo "build-layer: nothing was built" >&2; exit 1; }
[ "$failed" -eq 0 ]
