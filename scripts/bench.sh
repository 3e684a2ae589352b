#!/usr/bin/env bash
# Measures what loupe costs the function it runs beside, on this machine, and writes BENCHMARKS.md.
#
#   scripts/bench.sh            full run (release builds, layer build, cargo bench; minutes)
#   scripts/bench.sh --quick    smoke run: few repetitions, no layer build or cargo bench, output
#                               to a temporary file (its path is printed), BENCHMARKS.md untouched
#
# Everything runs under loupe-local (a local Lambda) with a tiny runtime and a do-nothing
# extension (the floor) built from tests/fixtures/floor/floor.rs, and a local OTLP sink that
# answers after a chosen delay. Per-extension init time, RSS and CPU come from loupe-local's
# report (spawn to first /event/next; /proc/PID/status and /proc/PID/stat read after init and
# just before SHUTDOWN). A figure that cannot be measured is written as "not measured: why".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

if [ "$quick" = 1 ]; then
  init_runs=3; small_invocations=50; burst_seconds=2; matrix_invocations=20
  out=$(mktemp /tmp/loupe-benchmarks.XXXXXX.md)
else
  init_runs=21; small_invocations=1000; burst_seconds=10; matrix_invocations=300
  out=$root/BENCHMARKS.md
fi
burst_rate=10000

work=$(mktemp -d /tmp/loupe-bench.XXXXXX)
sink_pid=
cleanup() {
  if [ -n "$sink_pid" ]; then kill "$sink_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "bench: $*" >&2; }

# --- builds ---------------------------------------------------------------------------------
log "building release binaries"
cargo build --release --locked --bins >&2
local_bin=$root/target/release/loupe-local
glibc_loupe=$root/target/release/loupe

musl_loupe=$root/target/x86_64-unknown-linux-musl/release/loupe
layer_line=
if [ "$quick" = 0 ] && [ "$(uname -m)" = x86_64 ]; then
  log "building the layer (static musl)"
  if layer_line=$(scripts/build-layer.sh x86_64); then :; else
    log "layer build failed or over budget: $layer_line"
  fi
fi
if [ -x "$musl_loupe" ]; then
  loupe_bin=$musl_loupe; loupe_kind="static musl (the shipped build, $musl_loupe)"
else
  loupe_bin=$glibc_loupe; loupe_kind="glibc release build (no musl build found; glibc adds about 1.5 MB of RSS)"
fi

log "building the floor"
rustc -O -C strip=symbols --edition 2021 -o "$work/floor" tests/fixtures/floor/floor.rs
mkdir -p "$work/ext-loupe" "$work/ext-floor"
cp "$loupe_bin" "$work/ext-loupe/loupe"
cp "$work/floor" "$work/ext-floor/floor"

# --- OTLP sink --------------------------------------------------------------------------------
# Answers every POST with 200 after SINK_DELAY_MS (read from a file, so one sink serves every
# case) and appends "path bytes content-encoding" per request to a log.
cat > "$work/sink.py" <<'PY'
import http.server, os, sys, time
work = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        try:
            delay = int(open(os.path.join(work, "delay_ms")).read().strip() or 0)
        except OSError:
            delay = 0
        if delay:
            time.sleep(delay / 1000)
        with open(os.path.join(work, "sink.log"), "a") as f:
            f.write("%s %d %s\n" % (self.path, len(body), self.headers.get("Content-Encoding") or "-"))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(os.path.join(work, "sink.port"), "w").write(str(s.server_address[1]))
s.serve_forever()
PY
echo 0 > "$work/delay_ms"
python3 "$work/sink.py" "$work" &
sink_pid=$!
for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.05; done
[ -s "$work/sink.port" ] || { log "OTLP sink did not start"; exit 1; }
sink_port=$(cat "$work/sink.port")

# --- runs -----------------------------------------------------------------------------------
# run NAME EXTDIR INVOCATIONS PAYLOAD TIMEOUT [ENV...]: one loupe-local run, report in $work/NAME.json
run() {
  local name=$1 dir=$2 n=$3 payload=$4 timeout=$5
  shift 5
  local envs=(--env "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$sink_port" --env LOUPE_API_KEY=bench)
  for e in "$@"; do envs+=(--env "$e"); done
  : > "$work/sink.log"
  if ! "$local_bin" --quiet --extensions-dir "$dir" --invocations "$n" --payload "$payload" \
      --timeout "$timeout" --report "$work/$name.json" "${envs[@]}" -- "$work/floor" runtime \
      > "$work/$name.out" 2> "$work/$name.err"; then
    log "run $name: loupe-local failed (see below)"; tail -5 "$work/$name.err" >&2
  fi
  cp "$work/sink.log" "$work/$name.sink"
}

log "init: $init_runs runs each of loupe and the floor, alternating"
for i in $(seq "$init_runs"); do
  run "init-loupe-$i" "$work/ext-loupe" 1 '{}' 3
  run "init-floor-$i" "$work/ext-floor" 1 '{}' 3
done

log "RSS and CPU: $small_invocations invocations of 10 EMF lines each"
run steady "$work/ext-loupe" "$small_invocations" '{"lines":10}' 3

log "burst: $burst_rate EMF lines/s for $burst_seconds s"
run burst "$work/ext-loupe" "$burst_seconds" "{\"lines\":$burst_rate,\"ms\":1000}" 30

declare -a matrix=()
for strategy in adaptive end periodic:10; do
  for delay in 0 20 100; do
    log "overhead: LOUPE_FLUSH=$strategy, backend delay $delay ms, $matrix_invocations invocations"
    echo "$delay" > "$work/delay_ms"
    name="matrix-${strategy/:/-}-$delay"
    run "$name" "$work/ext-loupe" "$matrix_invocations" '{"lines":10}' 3 "LOUPE_FLUSH=$strategy"
    matrix+=("$strategy $delay $name")
  done
done
echo 0 > "$work/delay_ms"
log "floor overhead: $matrix_invocations invocations"
run matrix-floor "$work/ext-floor" "$matrix_invocations" '{"lines":10}' 3

# --- micro-benchmarks and sizes ----------------------------------------------------------------
if [ "$quick" = 1 ]; then
  : > "$work/hotpath.txt"
else
  log "hotpath bench"
  cargo bench --locked --bench hotpath > "$work/hotpath.txt"
fi

# --- BENCHMARKS.md --------------------------------------------------------------------------------
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
python3 - "$work" "$out" "$quick" <<PY
import json, os, statistics, sys, re
work, out, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
machine = {
    "nproc": "$(nproc)",
    "cpu": """$cpu_model""",
    "kernel": "$(uname -srm)",
    "rustc": "$(rustc --version)",
    "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
    "commit": "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches Cargo.toml || echo ' (with local changes)')",
}
loupe_kind = """$loupe_kind"""
layer_line = """$layer_line"""
init_runs, small_n, burst_s, burst_rate, matrix_n = $init_runs, $small_invocations, $burst_seconds, $burst_rate, $matrix_invocations

def report(name):
    try:
        return json.load(open(os.path.join(work, name + ".json")))
    except (OSError, ValueError):
        return None

def ext(r, name):
    if not r:
        return None
    for e in r.get("extensions", []):
        if e.get("name") == name:
            return e
    return None

def sink(name):
    try:
        rows = [l.split() for l in open(os.path.join(work, name + ".sink"))]
    except OSError:
        return []
    return [r for r in rows if len(r) == 3]

def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, int(round(q * (len(xs) - 1)))))
    return xs[k]

def ms(x, d=2):
    return "not measured" if x is None else f"{x:.{d}f} ms"

def mb(kib):
    return None if kib is None else kib / 1024

rows = []        # (target, measured, verdict)
sections = []
def target(what, value, limit, unit, fmt="{:.2f}", why=None, at_least=False):
    bound = (">= " if at_least else "<= ") + f"{limit} {unit}"
    if value is None:
        rows.append((what, bound, "not measured: " + (why or "no data"), "-"))
    else:
        ok = value >= limit if at_least else value <= limit
        rows.append((what, bound, fmt.format(value) + " " + unit, "PASS" if ok else "MISS"))

# 1. init
li = [e["initMs"] for i in range(1, init_runs + 1) if (e := ext(report(f"init-loupe-{i}"), "loupe")) and e.get("initMs") is not None]
fi = [e["initMs"] for i in range(1, init_runs + 1) if (e := ext(report(f"init-floor-{i}"), "floor")) and e.get("initMs") is not None]
s = ["## 1. Init time (exec to first /event/next)", "",
     f"{init_runs} runs each, loupe and the floor alternating; loupe-local times from just before spawn to the extension's first \`/event/next\` call. Spread is min..max.", ""]
s.append("| extension | runs | median | min | p25 | min..max |")
s.append("|---|---|---|---|---|---|")
for n, xs in (("loupe", li), ("floor", fi)):
    s.append(f"| {n} | {len(xs)} | {ms(statistics.median(xs) if xs else None)} | {ms(min(xs) if xs else None)} | {ms(pct(xs, .25))} | " + (f"{min(xs):.2f}..{max(xs):.2f} ms" if xs else "-") + " |")
ratio = statistics.median(li) / statistics.median(fi) if li and fi else None
s.append("")
if ratio:
    s.append(f"Ratio loupe / floor: {ratio:.2f} on medians, {min(li) / min(fi):.2f} on minima.")
    s.append("The floor's time is mostly loupe-local's own: fork and exec from its process, and two HTTP round trips. "
             "The tail (max) is the machine's other load (it is shared): the minimum and p25 show the cost without it.")
else:
    s.append("Ratio: not measured (no init times recorded)")
sections.append(s)
target("init time (median)", statistics.median(li) if li else None, 3, "ms")
target("init time / floor (medians)", ratio, 2, "x")

# 2. RSS
idle = [e["usageAfterInit"]["rssKib"] for i in range(1, init_runs + 1) if (e := ext(report(f"init-loupe-{i}"), "loupe")) and e.get("usageAfterInit")]
idle_floor = [e["usageAfterInit"]["rssKib"] for i in range(1, init_runs + 1) if (e := ext(report(f"init-floor-{i}"), "floor")) and e.get("usageAfterInit")]
st = ext(report("steady"), "loupe")
bu = ext(report("burst"), "loupe")
st_rss = st["usageAtShutdown"]["rssKib"] if st and st.get("usageAtShutdown") else None
bu_hwm = bu["usageAtShutdown"]["hwmKib"] if bu and bu.get("usageAtShutdown") else None
bu_lines = sum((i.get("response") or {}).get("lines", 0) for i in (report("burst") or {}).get("invocations", []) if isinstance(i.get("response"), dict))
def fmb(k):
    return "not measured" if k is None else f"{k/1024:.2f} MB"
s = ["## 2. Resident memory of the loupe process", "",
     f"Binary measured: {loupe_kind}. VmRSS / VmHWM from /proc/PID/status.", "",
     "| when | value |", "|---|---|",
     f"| idle after init (VmRSS when the first invocation starts; median of {len(idle)} runs) | {fmb(statistics.median(idle) if idle else None)} |",
     f"| floor, same moment | {fmb(statistics.median(idle_floor) if idle_floor else None)} |",
     f"| after {small_n} invocations of 10 EMF lines (VmRSS before SHUTDOWN) | {fmb(st_rss)} |",
     f"| peak in a burst of {burst_rate} EMF lines/s for {burst_s} s (VmHWM before SHUTDOWN; {bu_lines} lines printed) | {fmb(bu_hwm)} |"]
sections.append(s)
target("RSS idle after init", mb(statistics.median(idle)) if idle else None, 6, "MB")
target(f"RSS peak in the {burst_rate} lines/s burst", mb(bu_hwm), 16, "MB")

# 3. overhead
matrix = """${matrix[*]}""".split()
s = ["## 3. Added duration per invocation (runtimeDone to loupe's /next)", "",
     f"loupe-local's \`extensionOverheadMs\`: from the runtime's next \`/next\` (its runtimeDone) to the last extension's \`/next\`. {matrix_n} invocations of 10 EMF lines per case; the OTLP sink answers after the given delay. \"OTLP requests\" counts what the sink received: 0 means loupe sent nothing, so the backend delay was not exercised.", "",
     "| LOUPE_FLUSH | backend delay | p50 | p99 | max | OTLP requests | bytes received |", "|---|---|---|---|---|---|---|"]
worst_pipelined = None
any_requests = False
for i in range(0, len(matrix), 3):
    strat, delay, name = matrix[i], int(matrix[i + 1]), matrix[i + 2]
    r = report(name)
    xs = [inv["extensionOverheadMs"] for inv in (r or {}).get("invocations", [])]
    req = sink(name)
    any_requests |= bool(req)
    s.append(f"| {strat} | {delay} ms | {ms(pct(xs, .5), 3)} | {ms(pct(xs, .99), 3)} | {ms(max(xs) if xs else None, 3)} | {len(req)} | {sum(int(q[1]) for q in req)} |")
    if delay == 100 and strat in ("adaptive", "periodic:10") and xs:
        worst_pipelined = max(worst_pipelined or 0, pct(xs, .99))
fr = report("matrix-floor")
fx = [inv["extensionOverheadMs"] for inv in (fr or {}).get("invocations", [])]
s.append(f"| floor extension | - | {ms(pct(fx, .5), 3)} | {ms(pct(fx, .99), 3)} | {ms(max(fx) if fx else None, 3)} | - | - |")
sections.append(s)
if any_requests:
    target("added duration p99, pipelined (adaptive / periodic), 100 ms backend", worst_pipelined, 1, "ms", "{:.3f}")
else:
    target("added duration p99, pipelined, 100 ms backend", None, 1, "ms",
           why="loupe sent no OTLP request in any case (this build of loupe does not export yet), so the backend delay was never on its path")

# 4. CPU
def cpu_delta(e):
    if not e or not e.get("usageAtShutdown") or not e.get("usageAfterInit"):
        return None
    return e["usageAtShutdown"]["cpuMs"] - e["usageAfterInit"]["cpuMs"]
st_cpu, bu_cpu = cpu_delta(st), cpu_delta(bu)
st_inv = len((report("steady") or {}).get("invocations", []))
bu_inv = len((report("burst") or {}).get("invocations", []))
per_1000_lines = bu_cpu * 1000 / bu_lines if bu_cpu is not None and bu_lines else None
per_inv = st_cpu / st_inv if st_cpu is not None and st_inv else None
s = ["## 4. CPU time of the loupe process", "",
     "user + system from /proc/PID/stat (clock ticks, 10 ms on this kernel: short runs read coarse), between the first invocation's start and SHUTDOWN.", "",
     "| run | CPU | per unit |", "|---|---|---|",
     f"| {st_inv} invocations of 10 EMF lines | {'not measured' if st_cpu is None else f'{st_cpu} ms'} | {'not measured' if per_inv is None else f'{per_inv:.3f} ms per invocation'} |",
     f"| burst, {bu_lines} EMF lines in {bu_inv} invocations | {'not measured' if bu_cpu is None else f'{bu_cpu} ms'} | {'not measured' if per_1000_lines is None else f'{per_1000_lines:.3f} ms per 1,000 lines'} |"]
sections.append(s)
target("CPU per 1,000 EMF lines (burst)", per_1000_lines, 1, "ms", "{:.3f}")

# 5 + 7. pipeline bench
pb = {}
for line in open(os.path.join(work, "hotpath.txt")):
    m = re.match(r"^(\w+): (.*)$", line.strip())
    if m:
        pb[m.group(1)] = m.group(2)
s = ["## 5. Throughput of the hot path (one core, CPU time)", ""]
if "parse_aggregate_lines_per_s" in pb:
    s += ["\`cargo bench --bench hotpath\`: synthetic aws-embedded-metrics lines of " + pb.get("emf_line_bytes", "?") + " bytes, " + pb.get("samples", "") + " per sample; median (range min..max over samples).", "",
          "| path | lines (events) per second per core |", "|---|---|",
          f"| EMF parse + aggregate | {pb['parse_aggregate_lines_per_s']} |",
          f"| serde_json::from_str::<Value> on the same lines (baseline) | {pb['serde_value_lines_per_s']} |",
          f"| Telemetry API decode_batch (events) | {pb['decode_batch_events_per_s']} |", "",
          f"parse + aggregate runs at {pb['parse_aggregate_vs_serde_value']}x the speed of parsing the same lines into a serde_json Value."]
    if "mixed_parse_aggregate_lines_per_s" in pb:
        s += ["", "A realistic stream (" + pb.get("mixed_stream", "?") + "): the four generator captures' lines (EMF of several shapes), each EMF line after 9 plain lines (runtime START/END/REPORT, text and JSON app logs).", "",
              "| path | lines per second per core |", "|---|---|",
              f"| EMF parse + aggregate, all lines | {pb['mixed_parse_aggregate_lines_per_s']} |",
              f"| EMF parse + aggregate, EMF lines of the stream | {pb['mixed_parse_aggregate_emf_lines_per_s']} |",
              f"| serde_json::from_str::<Value> on the same lines (baseline) | {pb['mixed_serde_value_lines_per_s']} |", "",
              f"On this stream parse + aggregate runs at {pb['mixed_parse_aggregate_vs_serde_value']}x the baseline's line rate."]
    s.append("Encode + gzip per flush is in section 7.")
    first = lambda k: float(pb[k].split()[0]) if k in pb else None
    target("EMF parse + aggregate, synthetic EMF lines", first("parse_aggregate_lines_per_s"), 1500000, "lines/s", "{:.0f}", at_least=True)
    target("EMF parse + aggregate / serde_json Value, synthetic EMF lines", first("parse_aggregate_vs_serde_value"), 1.5, "x", at_least=True)
    target("EMF parse + aggregate / serde_json Value, mixed stream", first("mixed_parse_aggregate_vs_serde_value"), 1.5, "x", at_least=True)
else:
    s.append("not measured: " + ("--quick skips cargo bench" if quick else "the hotpath bench printed nothing"))
sections.append(s)

# 6. sizes
s = ["## 6. Binary and layer size", ""]
m = re.search(r"binary\s+(\d+) bytes \((\w+)\)\s+zip\s+(\d+) bytes", layer_line)
if m:
    b, z = int(m.group(1)), int(m.group(3))
    s += [f"From \`scripts/build-layer.sh x86_64\` (static musl, stripped): binary {b} bytes ({b/1048576:.2f} MiB, {m.group(2)}), zipped layer {z} bytes ({z/1048576:.2f} MiB)."]
    target("stripped binary size", b / 1048576, 2.5, "MiB")
    target("zipped layer size", z / 1048576, 1.2, "MiB")
else:
    s.append("not measured: " + ("--quick skips the layer build" if quick else "scripts/build-layer.sh x86_64 did not report a size"))
    target("stripped binary size", None, 2.5, "MiB", why="no layer build")
    target("zipped layer size", None, 1.2, "MiB", why="no layer build")
sections.append(s)

# 7. wire
s = ["## 7. Bytes on the wire per 1,000 data points", ""]
if "otlp_proto_bytes_per_1000_points" in pb:
    s += [f"A realistic flush: {pb['otlp_points']} series (two metrics x 500 customers, about 20 values each) as OTLP exponential histogram data points with the Lambda resource attributes, built by \`benches/hotpath.rs\` from the aggregator's histograms and encoded by \`export::metrics::metrics_request\`.", "",
          "| encoding | bytes per 1,000 points | encode + compress, CPU per 1,000 points |", "|---|---|---|",
          f"| protobuf, no gzip | {pb['otlp_proto_bytes_per_1000_points']} | - |"]
    for lv in (1, 6, 9):
        s.append(f"| gzip -{lv} | {pb[f'gzip{lv}_bytes_per_1000_points']} | {pb[f'gzip{lv}_encode_us_per_1000_points']} us |")
    b1, b6, b9 = (int(pb[f"gzip{lv}_bytes_per_1000_points"]) for lv in (1, 6, 9))
    t1, t6, t9 = (float(pb[f"gzip{lv}_encode_us_per_1000_points"]) for lv in (1, 6, 9))
    s += ["", f"Choice: level 6 saves {100*(b1-b6)/b1:.0f}% of level 1's bytes for {t6-t1:.0f} us more CPU per 1,000 points; level 9 saves a further {100*(b6-b9)/max(b6,1):.1f}% for {t9-t6:.0f} us more. "
          "Bytes cost the function's network time (and the backend's ingest); CPU is taken from the function too, once per flush. "
          f"Level 6 (\`export::gzip::LEVEL\`) takes {100*(b1-b6)/max(b1-b9,1):.0f}% of the saving level 9 gets over level 1, at {t6/max(t9,1e-9)*100:.0f}% of level 9's CPU."]
else:
    s.append("not measured: " + ("--quick skips cargo bench" if quick else "the hotpath bench printed nothing"))
reqs = [q for q in sink("burst")]
if reqs:
    s.append("")
    s.append(f"End to end, the burst sent {len(reqs)} OTLP requests, {sum(int(q[1]) for q in reqs)} bytes in all (Content-Encoding: {', '.join(sorted(set(q[2] for q in reqs)))}).")
else:
    s += ["", "End to end: not measured: loupe sent no OTLP request during the burst (this build of loupe does not export yet)."]
sections.append(s)

lines = ["<!-- Generated by scripts/bench.sh: do not edit by hand; re-run the script. -->", "",
         "# loupe benchmarks" + (" (--quick smoke run: too few repetitions to trust)" if quick else ""), "",
         "What the extension costs the function beside it, measured on this machine by \`scripts/bench.sh\`.", "",
         "## Machine", "",
         f"- date: {machine['date']}, commit {machine['commit']}",
         f"- CPU: {machine['cpu']}, nproc {machine['nproc']} (shared with other work: expect noise)",
         f"- kernel: {machine['kernel']}",
         f"- {machine['rustc']}",
         f"- loupe binary measured for init, RSS and CPU: {loupe_kind}", "",
         "## Targets", "",
         "| target | limit | measured | verdict |", "|---|---|---|---|"]
lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
lines.append("")
for sct in sections:
    lines += sct + [""]
lines += ["## How", "",
          "- \`scripts/bench.sh\` builds \`loupe\` and \`loupe-local\` in release, the layer with \`scripts/build-layer.sh x86_64\`, and the floor (\`tests/fixtures/floor/floor.rs\`, std only: registers and loops on \`/event/next\`) with \`rustc -O\`.",
          "- Each run: \`loupe-local --quiet --extensions-dir DIR --invocations N --payload '{\"lines\":L,\"ms\":T}' --report R.json -- floor runtime\`; the floor's runtime mode prints L EMF lines spread over T ms per invocation.",
          "- loupe gets \`OTEL_EXPORTER_OTLP_ENDPOINT\` pointing at a Python OTLP sink on 127.0.0.1 that answers 200 after the case's delay.",
          "- The report's per-extension \`initMs\`, \`usageAfterInit\` and \`usageAtShutdown\` (VmRSS, VmHWM, CPU ms) and per-invocation \`extensionOverheadMs\` are the raw data.",
          "- \`cargo bench --bench hotpath\` gives sections 5 and 7; \`cargo bench\` runs every micro-benchmark."]
open(out, "w").write("\n".join(lines) + "\n")
PY
log "wrote $out"
echo "$out"
