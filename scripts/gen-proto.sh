#!/usr/bin/env bash
# Regenerates src/export/proto/*.rs from the OTLP .proto definitions. Not part of the build: the
# generated code is committed so that building loupe needs no protoc.
# Usage: scripts/gen-proto.sh PATH_TO_OPENTELEMETRY_PROTO_CHECKOUT   (tag v1.9.0)
# Needs: protoc (Debian: protobuf-compiler) and cargo (fetches prost-build 0.14).
set -euo pipefail
src=$(cd "${1:?usage: $0 PATH_TO_OPENTELEMETRY_PROTO_CHECKOUT}" && pwd)
out="$(cd "$(dirname "$0")/.." && pwd)/src/export/proto"
command -v protoc >/dev/null || { echo "gen-proto: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/out"
cat > "$work/Cargo.toml" <<'TOML'
[package]
name = "gen"
version = "0.0.0"
edition = "2024"
[dependencies]
prost-build = "0.14"
TOML
cat > "$work/src/main.rs" <<'RS'
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (src, out) = (&args[1], &args[2]);
    let protos: Vec<String> = ["metrics", "logs", "trace"]
        .iter()
        .map(|s| format!("{src}/opentelemetry/proto/collector/{s}/v1/{s}_service.proto"))
        .collect();
    prost_build::Config::new()
        .out_dir(out)
        .compile_protos(&protos, &[src])
        .expect("protoc failed");
}
RS
(cd "$work" && cargo run -q -- "$src" "$work/out")
for f in "$work"/out/*.rs; do
  # Doc comments become plain comments: the .proto prose holds indented diagrams that rustdoc would
  # otherwise try to compile as doctests.
  sed -e 's#^\(\s*\)///#\1//#' "$f" > "$out/$(basename "$f")"
done
echo "gen-proto: wrote $(ls "$work"/out/*.rs | wc -l) files to $out"
