//! The synthetic EMF workload shared by `benches/hotpath.rs` and `examples/emf_profile.rs`: lines
//! as aws-embedded-metrics writes them, two metrics, one dimension over `customers` values, a
//! request id property; values vary so histograms fill several buckets.

/// The lines' `_aws.Timestamp` (and the clock the parser is given).
pub const NOW_MS: i64 = 1_795_497_900_000;

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
