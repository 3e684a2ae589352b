//! A fixed workload for instruction counting (`valgrind --tool=callgrind`): the EMF lines of the
//! generator fixtures and the synthetic lines of `benches/hotpath.rs`, parsed and aggregated a
//! set number of times. Instruction counts, unlike times, repeat exactly on a busy machine.
//!
//! ```text
//! cargo build --release --example emf_profile
//! valgrind --tool=callgrind target/release/examples/emf_profile emf 10
//! ```
//!
//! `emf_profile MODE [ROUNDS] [hot|keep]`. Modes: `emf` (parse + aggregate, drained every 10,000
//! lines as in `benches/hotpath.rs`), `parse` (parse alone), `serde`
//! (`serde_json::from_str::<Value>` on the same lines), `plain` (parse of plain log lines),
//! `aggregate` (aggregation alone of already parsed hotpath lines, drained every round, or once
//! at the end with `keep`), `time` (CPU ns per line of parse, parse + aggregate, aggregation and
//! serde_json on the hotpath lines), `allocs` (heap allocations per line of parse, parse +
//! aggregate and serde_json on the hotpath lines, from a counting allocator), `verdicts` (print
//! every fixture line's and every fuzz corpus file's verdict, to compare two builds) and `empty`
//! (the setup alone, whose count is subtracted from the others). With `hot`, `emf`, `parse` and `serde` run on the hotpath lines
//! alone (10,000 lines over 500 customers) instead of the fixtures plus 1,000 synthetic lines.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use loupe::aggregate::Aggregator;
use loupe::emf::{self, ParseOptions, Record, Verdict};
use serde_json::Value;

#[path = "../benches/support/workload.rs"]
mod workload;
use workload::{FIXTURES, GENERATOR_FILES, emf_lines, options};

/// The system allocator, counting allocations (reallocations included) while `COUNTING` is
/// set: in the `allocs` mode only, so the other modes pay one plain load per allocation.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count_one() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` (or `realloc`) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations per line made by `f` over `lines` lines.
fn per_line(lines: usize, f: impl FnOnce()) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    f();
    COUNTING.store(false, Ordering::Relaxed);
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / lines.max(1) as f64
}

/// Allocations per line of parse alone, parse + aggregate and serde_json, on the hotpath lines.
fn allocs(opts: &ParseOptions, rounds: usize) {
    let lines = emf_lines(10_000, 500);
    let n = lines.len() * rounds;
    let parse = per_line(n, || {
        for _ in 0..rounds {
            for l in &lines {
                black_box(emf::parse(Record::Text(black_box(l)), opts));
            }
        }
    });
    let mut agg = Aggregator::new(1_000);
    let both = per_line(n, || {
        for _ in 0..rounds {
            for l in &lines {
                if let Verdict::Emf(e) = emf::parse(Record::Text(black_box(l)), opts) {
                    agg.add_line(&e);
                }
            }
            black_box(agg.drain());
        }
    });
    let serde = per_line(n, || {
        for _ in 0..rounds {
            for l in &lines {
                black_box(serde_json::from_str::<Value>(black_box(l)).ok());
            }
        }
    });
    println!(
        "allocations/line: parse {parse:.2}, parse+aggregate {both:.2}, serde Value {serde:.2}"
    );
}

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/emf_line/");

/// Every line of the generator captures.
fn fixture_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for f in GENERATOR_FILES {
        let Ok(text) = std::fs::read_to_string(format!("{FIXTURES}{f}")) else {
            eprintln!("missing fixture {f}");
            std::process::exit(2);
        };
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}

fn plain_lines() -> Vec<String> {
    let id = "3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab";
    vec![
        format!("START RequestId: {id} Version: $LATEST"),
        format!("END RequestId: {id}"),
        format!(
            "REPORT RequestId: {id}\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 71 MB"
        ),
        format!("2026-11-24T05:21:04.582Z\t{id}\tINFO\tProcessing order 12345 for customer acme"),
        format!("[INFO]\t2026-11-24T05:21:04.996Z\t{id}\tFound credentials in environment."),
        "{\"level\":\"debug\",\"msg\":\"cache miss\",\"key\":\"user:42\",\"ttl\":300}".to_owned(),
    ]
}

/// The thread's CPU time, in ns.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// CPU ns per line of parse alone, parse + aggregate, and the serde_json baseline, on the lines
/// of `benches/hotpath.rs` (10,000 lines over 500 customers, drained every 10,000 lines).
fn time(opts: &ParseOptions, rounds: usize) {
    let lines = emf_lines(10_000, 500);
    let n = (lines.len() * rounds) as f64;
    let t = cpu_ns();
    for _ in 0..rounds {
        for l in &lines {
            black_box(emf::parse(Record::Text(black_box(l)), opts));
        }
    }
    let parse = (cpu_ns() - t) as f64 / n;
    let mut agg = Aggregator::new(1_000);
    let t = cpu_ns();
    for _ in 0..rounds {
        for l in &lines {
            if let Verdict::Emf(e) = emf::parse(Record::Text(black_box(l)), opts) {
                agg.add_line(&e);
            }
        }
        black_box(agg.drain());
    }
    let both = (cpu_ns() - t) as f64 / n;
    let t = cpu_ns();
    for _ in 0..rounds {
        for l in &lines {
            black_box(serde_json::from_str::<Value>(black_box(l)).ok());
        }
    }
    let serde = (cpu_ns() - t) as f64 / n;
    let parsed: Vec<_> = lines
        .iter()
        .filter_map(|l| match emf::parse(Record::Text(l), opts) {
            Verdict::Emf(e) => Some(e),
            _ => None,
        })
        .collect();
    let t = cpu_ns();
    for _ in 0..rounds {
        for e in &parsed {
            agg.add_line(black_box(e));
        }
        black_box(agg.drain());
    }
    let add = (cpu_ns() - t) as f64 / n;
    println!(
        "ns/line: parse {parse:.0}, parse+aggregate {both:.0}, aggregate alone {add:.0}, serde Value {serde:.0}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("emf", String::as_str);
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(10);
    let opts = options();

    // `hot` as the third argument: the lines of `benches/hotpath.rs` alone.
    let mut lines = Vec::new();
    if args.get(3).is_some_and(|a| a == "hot") {
        lines.extend(emf_lines(10_000, 500));
    } else {
        lines.extend(fixture_lines());
        lines.extend(emf_lines(1_000, 100));
    }
    let emf_only: Vec<String> = lines
        .into_iter()
        .filter(|l| matches!(emf::parse(Record::Text(l), &opts), Verdict::Emf(_)))
        .collect();

    match mode {
        "empty" => {}
        "time" => time(&opts, rounds),
        "allocs" => allocs(&opts, rounds),
        "aggregate" => {
            // Aggregation alone, on the lines of `benches/hotpath.rs`.
            let lines = emf_lines(10_000, 500);
            let parsed: Vec<_> = lines
                .iter()
                .filter_map(|l| match emf::parse(Record::Text(l), &opts) {
                    Verdict::Emf(e) => Some(e),
                    _ => None,
                })
                .collect();
            let mut agg = Aggregator::new(1_000);
            // `keep` as the third argument: drain once at the end (no series churn).
            let keep = args.get(3).is_some_and(|a| a == "keep");
            for _ in 0..rounds {
                for e in &parsed {
                    agg.add_line(black_box(e));
                }
                if !keep {
                    black_box(agg.drain());
                }
            }
            black_box(agg.drain());
        }
        "emf" => {
            // As in `benches/hotpath.rs`: the series are drained every 10,000 lines.
            let mut agg = Aggregator::new(1_000);
            let (mut points, mut since) = (0, 0);
            for _ in 0..rounds {
                for l in &emf_only {
                    if let Verdict::Emf(e) = emf::parse(Record::Text(black_box(l)), &opts) {
                        points += agg.add_line(&e);
                    }
                    since += 1;
                    if since == 10_000 {
                        black_box(agg.drain());
                        since = 0;
                    }
                }
            }
            black_box(agg.drain());
            println!("{} lines, {points} points", emf_only.len() * rounds);
        }
        "serde" => {
            for _ in 0..rounds {
                for l in &emf_only {
                    black_box(serde_json::from_str::<Value>(black_box(l)).ok());
                }
            }
            println!("{} lines", emf_only.len() * rounds);
        }
        "parse" => {
            for _ in 0..rounds {
                for l in &emf_only {
                    black_box(emf::parse(Record::Text(black_box(l)), &opts));
                }
            }
            println!("{} lines", emf_only.len() * rounds);
        }
        "plain" => {
            let plain = plain_lines();
            for _ in 0..rounds {
                for l in &plain {
                    black_box(emf::parse(Record::Text(black_box(l)), &opts));
                }
            }
            println!("{} lines", plain.len() * rounds);
        }
        "verdicts" => {
            for l in fixture_lines() {
                println!("{:?}", emf::parse(Record::Text(&l), &opts));
            }
            let Ok(dir) = std::fs::read_dir(CORPUS) else {
                eprintln!("no fuzz corpus at {CORPUS}");
                std::process::exit(2);
            };
            let mut paths: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let Ok(bytes) = std::fs::read(&p) else {
                    continue;
                };
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                let verdict = emf::parse_bytes(&bytes, &opts);
                println!("{}\t{verdict:?}", name.unwrap_or_default());
                if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                    println!("  json\t{:?}", emf::parse(Record::Json(&value), &opts));
                }
            }
        }
        other => {
            eprintln!(
                "unknown mode {other}: emf, parse, serde, plain, aggregate, time, allocs, verdicts or empty"
            );
            std::process::exit(2);
        }
    }
}
