#!/usr/bin/env bash
# The demo: the sample Python function runs under loupe-local (a local Lambda) with loupe as its
# extension and loupe-local's OTLP receiver as the backend, for a few hundred invocations whose
# payloads are known (examples/python/payloads.py). Then it prints what reached the receiver.
#
#   bash scripts/demo.sh [INVOCATIONS]      (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
count=${1:-300}

echo "== building loupe and loupe-local (debug: quicker overall than an LTO release build)"
cargo build --bins

echo "== installing the sample function's packages (.venv)"
bash scripts/setup.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/loupe-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/extensions"
ln -s "$root/target/debug/loupe" "$work/extensions/loupe"
# Every 25th request fails (PaymentFailed with its user id); request 100 sleeps past the timeout.
.venv/bin/python examples/python/payloads.py --count "$count" --seed 7 --fail-every 25 \
  --timeout-at "$((count < 100 ? count : 100))" --sleep-ms 1500 > "$work/payloads.jsonl"

echo "== running $count invocations under loupe-local with loupe and --receiver"
start=$(date +%s)
(cd examples/python && "$root/target/debug/loupe-local" --quiet \
  --extensions-dir "$work/extensions" --payloads "$work/payloads.jsonl" --timeout 1 \
  --receiver --threshold 5,10,100 --report "$work/report.json" \
  --env LOUPE_LOG_LEVEL=info \
  -- "$root/.venv/bin/python" -m awslambdaric app.handler) | tee "$work/summary.txt"
echo "== ran in $(( $(date +%s) - start )) s"

echo
echo "== what the backend can answer"
.venv/bin/python - "$work/report.json" <<'PY'
import json, sys

r = json.load(open(sys.argv[1]))
rx = r.get("receiver") or {}
n = sum(rx.get("requests", {}).values())
print(f"{n} OTLP requests received")
if n == 0:
    print("loupe sent nothing to the receiver: the lifecycle above is all there is to show.")

def ms(v):
    return "-" if v is None else f"{v:.2f} ms"

def attrs(s):
    return ",".join(f"{k}={v}" for k, v in sorted(s.get("attributes", {}).items()))

print("\nShare of DB writes over 5 / 10 / 100 ms, per customer:")
for s in rx.get("histograms", []):
    if s["name"] == "DbWriteLatency":
        shares = ", ".join(f">{t:g} ms: {v*100:.1f}%" for t, v in s["shareAbove"])
        print(f"  {attrs(s)}: {s['count']} writes, p50 {ms(s['p50'])}, p99 {ms(s['p99'])}, {shares}")

print("\nWhich user hit which error:")
for e in rx.get("errors", []):
    print(f"  request {e.get('requestId')}: user {e.get('userId')}, {e.get('status')} {e.get('errorType')}")

print("\nThanks and curses:")
for s in rx.get("histograms", []) + rx.get("sums", []):
    if s["name"] == "UserFeedback":
        total = s.get("value") if s.get("value") is not None else s.get("sum")
        print(f"  {attrs(s)}: {total}")

print(f"\nEMF events: {rx.get('emfEvents', 0)}; samples:")
for a in rx.get("emfSamples", []):
    print(f"  {a}")

print("\nloupe's own metrics:")
for s in rx.get("loupeMetrics", []):
    v = s.get("value") if s.get("value") is not None else s.get("sum")
    print(f"  {s['name']} {{{attrs(s)}}}: {v}")
PY
