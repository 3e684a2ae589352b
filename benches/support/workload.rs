//! What the benchmarks and the profile example share (`#[path]`-included by `benches/*.rs` and
//! `examples/emf_profile.rs`): the synthetic EMF workload (lines as aws-embedded-metrics writes
//! them: two metrics, one dimension over `customers` values, a request id property; values vary so
//! histograms fill several buckets), the generator captures, the parse options and a CPU clock.

#![allow(dead_code)]

use std::time::Duration;

use loupe::emf::ParseOptions;

/// The fixtures directory and its four generator captures.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/emf/");
pub const GENERATOR_FILES: [&str; 4] = [
    "aws-embedded-metrics-python_3.5.0.jsonl",
    "aws-embedded-metrics-node_4.2.1.jsonl",
    "aws-lambda-powertools-python_3.37.0.jsonl",
    "powertools-lambda-typescript-metrics_2.36.0.jsonl",
];

/// The lines' `_aws.Timestamp` (and the clock the parser is given).
pub const NOW_MS: i64 = 1_795_497_900_000;

/// Parse options with the clock at [`NOW_MS`], timestamps checked.
pub fn options() -> ParseOptions {
    ParseOptions {
        now_ms: NOW_MS,
        record_time_ms: Some(NOW_MS),
        check_timestamp: true,
        strict_dimensions: false,
    }
}

/// CPU time this thread has run, from the kernel's scheduler statistics (`/proc/thread-self/
/// schedstat`, in ns): the machine is shared, so wall time would count other processes' turns.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    let ns: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("run time in ns");
    Duration::from_nanos(ns)
}

pub fn emf_lines(n: usize, customers: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let latency = 1.0 + (i * 7919 % 997) as f64 / 10.0;
            format!(
                concat!(
                    r#"{{"_aws":{{"Timestamp":{},"CloudWatchMetrics":[{{"Namespace":"bench","#,
                    r#""Dimensions":[["customer"]],"Metrics":[{{"Name":"Latency","Unit":"Milliseconds"}},"#,
                    r#"{{"Name":"Items","Unit":"Count"}}]}}]}},"customer":"customer-{}","#,
                    r#""Latency":{},"Items":{},"requestId":"3f1c6b6e-1a2b-4c3d-9e8f-{:012}"}}"#
                ),
                NOW_MS,
                i % customers,
                latency,
                i % 5,
                i
            )
        })
        .collect()
}

/// Every line of the generator captures, in file order (EMF lines of several shapes and whatever
/// else the generators printed).
pub fn generator_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for f in GENERATOR_FILES {
        let text = std::fs::read_to_string(format!("{FIXTURES}{f}")).expect("generator capture");
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}

/// Typical lines that are not EMF: the runtime's START/END/REPORT, app text logs with and
/// without the runtime's prefix, an error line, JSON app logs, an access log line.
pub fn plain_lines() -> Vec<String> {
    let id = "3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab";
    vec![
        format!("START RequestId: {id} Version: $LATEST"),
        format!("END RequestId: {id}"),
        format!(
            "REPORT RequestId: {id}\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 71 MB\tInit Duration: 187.20 ms"
        ),
        format!(
            "2026-11-24T05:21:04.582Z\t{id}\tINFO\tProcessing order 12345 for customer acme-corp"
        ),
        format!(
            "2026-11-24T05:21:04.583Z\t{id}\tERROR\tInvoke Error {{\"errorType\":\"TypeError\",\"errorMessage\":\"x is undefined\"}}"
        ),
        format!(
            "[INFO]\t2026-11-24T05:21:04.996Z\t{id}\tFound credentials in environment variables."
        ),
        format!(
            "{{\"timestamp\":\"2026-11-24T05:21:04.806Z\",\"level\":\"INFO\",\"requestId\":\"{id}\",\"message\":\"order placed\",\"orderId\":\"o-991\",\"durationMs\":12}}"
        ),
        "{\"level\":\"debug\",\"msg\":\"cache miss\",\"key\":\"user:42\",\"ttl\":300}".to_owned(),
        "GET /orders/12345 200 12ms - 1.2kb".to_owned(),
    ]
}
