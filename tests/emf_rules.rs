//! One test per rule and per hostile input: each asserts the exact verdict and reasons.

use loupe::emf::{
    self, EmfLine, MAX_EVENT_BYTES, ParseOptions, Reason, Record, Samples, Unit, Verdict,
};
use serde_json::{Value, json};

const NOW: i64 = 1_795_497_900_000;
const TS: i64 = 1_795_497_869_348;

fn opts() -> ParseOptions {
    ParseOptions {
        now_ms: NOW,
        record_time_ms: None,
        check_timestamp: true,
        strict_dimensions: false,
    }
}

fn run(line: &str) -> Verdict<'_> {
    emf::parse(Record::Text(line), &opts())
}

#[track_caller]
fn rejected(line: &str, want: &[Reason]) {
    match run(line) {
        Verdict::Rejected(got) => assert_eq!(sorted(&got), sorted(want), "line: {}", short(line)),
        other => panic!("want rejection {want:?}, got {other:?} for {}", short(line)),
    }
}

#[track_caller]
fn accepted(line: &str) -> EmfLine<'static> {
    match run(line) {
        Verdict::Emf(l) => l.into_owned(),
        other => panic!("want EMF, got {other:?} for {}", short(line)),
    }
}

fn sorted(r: &[Reason]) -> Vec<Reason> {
    let mut r = r.to_vec();
    r.sort();
    r
}

fn short(s: &str) -> &str {
    s.get(..200.min(s.len())).unwrap_or(s)
}

/// An EMF document with one directive; `metrics` is the `Metrics` array, `rest` the other root
/// members (without braces).
fn doc(dims: &str, metrics: &str, rest: &str) -> String {
    format!(
        r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[{{"Namespace":"App","Dimensions":{dims},"Metrics":{metrics}}}]}},{rest}}}"#
    )
}

/// One metric `M` (unit Count) with value `value`, dimension `S` = "svc".
fn one(value: &str) -> String {
    doc(
        r#"[["S"]]"#,
        r#"[{"Name":"M","Unit":"Count"}]"#,
        &format!(r#""S":"svc","M":{value}"#),
    )
}

fn samples(l: &EmfLine) -> Vec<Samples> {
    l.points.iter().map(|p| p.samples.clone()).collect()
}

#[test]
fn plain_lines_are_logs() {
    for line in [
        "",
        "START RequestId: 8f5a Version: $LATEST",
        "{\"level\":\"info\",\"msg\":\"hello\"}",
        "not json at all {",
        "the _aws key is mentioned here",
        "{",
        "[1,2,3] _aws",
    ] {
        assert!(matches!(run(line), Verdict::Log), "{line:?}");
    }
    // JSON without `_aws` is a log line, even when it says CloudWatchMetrics in a value.
    assert!(matches!(
        run(r#"{"note":"CloudWatchMetrics are nice"}"#),
        Verdict::Log
    ));
}

#[test]
fn valid_minimal_line() {
    let line = one("12.5");
    let l = accepted(&line);
    assert_eq!(l.timestamp_ms, TS);
    assert_eq!(l.points.len(), 1);
    let p = &l.points[0];
    assert_eq!(
        (&*p.namespace, &*p.name, p.unit, p.storage_resolution),
        ("App", "M", Unit::Count, 60)
    );
    assert_eq!(p.dimensions, vec![("S".into(), "svc".into())]);
    assert_eq!(p.samples, Samples::One(12.5));
    assert!(l.warnings.is_empty());
    assert!(l.properties.is_empty());
}

#[test]
fn trailing_newlines_are_stripped_once() {
    let line = format!("{}\r\n", one("1"));
    assert_eq!(accepted(&line).points.len(), 1);
    let line = format!("{}\n", one("1"));
    assert_eq!(accepted(&line).points.len(), 1);
    // JSON allows trailing whitespace anyway.
    let line = format!("{}\n\n", one("1"));
    assert_eq!(accepted(&line).points.len(), 1);
}

#[test]
fn truncated_json_is_a_parse_error() {
    let line = one("12.5");
    for cut in [10, 40, line.len() / 2, line.len() - 1] {
        rejected(&line[..cut], &[Reason::JsonParseError]);
    }
}

#[test]
fn trailing_garbage_is_a_parse_error() {
    rejected(&format!("{} trailing", one("1")), &[Reason::JsonParseError]);
    rejected(&format!("{}{{}}", one("1")), &[Reason::JsonParseError]);
}

#[test]
fn nan_and_infinity_literals_are_parse_errors() {
    rejected(&one("NaN"), &[Reason::JsonParseError]);
    rejected(&one("[1.0, Infinity]"), &[Reason::JsonParseError]);
    rejected(&one("-Infinity"), &[Reason::JsonParseError]);
}

#[test]
fn numbers_out_of_cloudwatch_range_are_not_numeric() {
    rejected(&one("1e400"), &[Reason::MetricValueNotNumeric]);
    rejected(&one("3e108"), &[Reason::MetricValueNotNumeric]);
    rejected(&one("1e-200"), &[Reason::MetricValueNotNumeric]);
    assert_eq!(samples(&accepted(&one("2e108"))), [Samples::One(2e108)]);
    assert_eq!(samples(&accepted(&one("0"))), [Samples::One(0.0)]);
    assert_eq!(samples(&accepted(&one("-7"))), [Samples::One(-7.0)]);
}

#[test]
fn strings_bools_and_objects_as_values_are_not_numeric() {
    for v in [
        r#""12.5""#,
        "true",
        "false",
        r#"{"a":1}"#,
        r#"[1,"2"]"#,
        "[1,null]",
        "[[1]]",
    ] {
        rejected(&one(v), &[Reason::MetricValueNotNumeric]);
    }
    rejected(&one("null"), &[Reason::MetricValueNull]);
    rejected(&one("[]"), &[Reason::MetricValueEmptyArray]);
}

#[test]
fn at_most_100_values() {
    let list = |n: usize| format!("[{}]", vec!["1.5"; n].join(","));
    let l = accepted(&one(&list(100)));
    assert_eq!(samples(&l), [Samples::Values(vec![1.5; 100])]);
    rejected(&one(&list(101)), &[Reason::MetricTooManyValues]);
    rejected(&one(&list(5000)), &[Reason::MetricTooManyValues]);
}

#[test]
fn at_most_30_dimensions_per_set() {
    let line = |n: usize| {
        let keys: Vec<String> = (0..n).map(|i| format!("\"d{i}\"")).collect();
        let members: Vec<String> = (0..n).map(|i| format!("\"d{i}\":\"v{i}\"")).collect();
        doc(
            &format!("[[{}]]", keys.join(",")),
            r#"[{"Name":"M"}]"#,
            &format!("{},\"M\":1", members.join(",")),
        )
    };
    let ok = line(30);
    assert_eq!(accepted(&ok).points[0].dimensions.len(), 30);
    rejected(&line(31), &[Reason::DimensionSetOver30]);
}

#[test]
fn at_most_100_metric_definitions() {
    let line = |n: usize| {
        let defs: Vec<String> = (0..n).map(|i| format!(r#"{{"Name":"m{i}"}}"#)).collect();
        let members: Vec<String> = (0..n).map(|i| format!("\"m{i}\":{i}")).collect();
        doc("[[]]", &format!("[{}]", defs.join(",")), &members.join(","))
    };
    assert_eq!(accepted(&line(100)).points.len(), 100);
    rejected(&line(101), &[Reason::MetricDefinitionsOver100]);
}

#[test]
fn missing_dimension_key_publishes_without_dimensions() {
    let line = doc(
        r#"[["S","Missing"]]"#,
        r#"[{"Name":"M"}]"#,
        r#""S":"svc","M":1"#,
    );
    let l = accepted(&line);
    assert_eq!(l.points.len(), 1);
    assert!(l.points[0].dimensions.is_empty());
    assert_eq!(
        sorted(&l.warnings),
        [
            Reason::DimensionSetDroppedInvalidOrMissingTarget,
            Reason::PublishedWithoutDimensions
        ]
    );
    // `S` is named by a directive: it is not a property even though its set was dropped.
    assert!(l.properties.is_empty());

    let strict = ParseOptions {
        strict_dimensions: true,
        ..opts()
    };
    match emf::parse(Record::Text(&line), &strict) {
        Verdict::Rejected(r) => assert_eq!(
            sorted(&r),
            [
                Reason::DimensionSetDroppedInvalidOrMissingTarget,
                Reason::DirectiveHasNoMetrics
            ]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_string_and_bad_dimension_values_drop_the_set() {
    let long = format!("\"{}\"", "x".repeat(1025));
    let ok_long = format!("\"{}\"", "x".repeat(1024));
    for v in [
        "404",
        "true",
        "null",
        r#""""#,
        r#""   ""#,
        r#""caf\u00e9""#,
        r#""a\u0001b""#,
        "[\"a\"]",
        "{}",
        &long,
    ] {
        let line = doc(
            r#"[["S"]]"#,
            r#"[{"Name":"M"}]"#,
            &format!(r#""S":{v},"M":1"#),
        );
        let l = accepted(&line);
        assert!(l.points[0].dimensions.is_empty(), "{v}");
        assert_eq!(
            sorted(&l.warnings),
            [
                Reason::DimensionSetDroppedInvalidOrMissingTarget,
                Reason::PublishedWithoutDimensions
            ],
            "{v}"
        );
    }
    let line = doc(
        r#"[["S"]]"#,
        r#"[{"Name":"M"}]"#,
        &format!(r#""S":{ok_long},"M":1"#),
    );
    assert_eq!(accepted(&line).points[0].dimensions[0].1.len(), 1024);
}

#[test]
fn bad_dimension_keys_drop_the_set() {
    for k in [r#"":x""#, r#""""#, r#""  ""#, r#""k\u00e9""#] {
        let line = doc(
            &format!("[[{k}]]"),
            r#"[{"Name":"M"}]"#,
            &format!(r#"{k}:"v","M":1"#),
        );
        let l = accepted(&line);
        assert!(l.points[0].dimensions.is_empty(), "{k}");
        assert!(
            l.warnings
                .contains(&Reason::DimensionSetDroppedInvalidOrMissingTarget)
        );
    }
}

#[test]
fn one_bad_set_of_two_is_dropped_alone() {
    let line = doc(
        r#"[["S"],["S","C"]]"#,
        r#"[{"Name":"M"}]"#,
        r#""S":"svc","M":1"#,
    );
    let l = accepted(&line);
    assert_eq!(l.points.len(), 1);
    assert_eq!(l.points[0].dimensions, vec![("S".into(), "svc".into())]);
    assert_eq!(
        l.warnings,
        [Reason::DimensionSetDroppedInvalidOrMissingTarget]
    );
}

#[test]
fn identical_sets_count_once_and_keys_are_sorted() {
    let line = doc(
        r#"[["B","A"],["A","B"],["A","A","B"]]"#,
        r#"[{"Name":"M"}]"#,
        r#""A":"1","B":"2","M":1"#,
    );
    let l = accepted(&line);
    assert_eq!(l.points.len(), 1);
    assert_eq!(
        l.points[0].dimensions,
        vec![("A".into(), "1".into()), ("B".into(), "2".into())]
    );
}

#[test]
fn empty_dimensions_mean_one_empty_set() {
    for dims in ["[]", "[[]]"] {
        let l = accepted(&doc(dims, r#"[{"Name":"M"}]"#, r#""M":1"#));
        assert_eq!(l.points.len(), 1);
        assert!(l.points[0].dimensions.is_empty());
        assert!(l.warnings.is_empty());
    }
}

#[test]
fn malformed_dimensions_and_metrics_reject_the_event() {
    rejected(
        &doc(r#"["S"]"#, r#"[{"Name":"M"}]"#, r#""S":"s","M":1"#),
        &[Reason::DimensionsNotArrayOfStringArrays],
    );
    rejected(
        &doc(r#"[[1]]"#, r#"[{"Name":"M"}]"#, r#""M":1"#),
        &[Reason::DimensionsNotArrayOfStringArrays],
    );
    rejected(
        &doc(r#""S""#, r#"[{"Name":"M"}]"#, r#""M":1"#),
        &[Reason::DimensionsNotArrayOfStringArrays],
    );
    rejected(
        &doc("[]", r#"["M"]"#, r#""M":1"#),
        &[Reason::MetricsNotArrayOfObjects],
    );
    rejected(
        &doc("[]", r#"{"Name":"M"}"#, r#""M":1"#),
        &[Reason::MetricsNotArrayOfObjects],
    );
    rejected(
        &doc("[]", r#"[{"Name":""}]"#, r#""M":1"#),
        &[Reason::MetricDefinitionNameInvalid],
    );
    rejected(
        &doc("[]", r#"[{"Name":"  "}]"#, r#""M":1"#),
        &[Reason::MetricDefinitionNameInvalid],
    );
    rejected(
        &doc("[]", r#"[{"Name":5}]"#, r#""M":1"#),
        &[Reason::MetricDefinitionNameInvalid],
    );
    let long = "n".repeat(256);
    rejected(
        &doc(
            "[]",
            &format!(r#"[{{"Name":"{long}"}}]"#),
            &format!(r#""{long}":1"#),
        ),
        &[Reason::MetricDefinitionNameInvalid],
    );
    rejected(
        &doc("[]", "[]", r#""M":1"#),
        &[Reason::DirectiveHasNoMetrics],
    );
    // No `Dimensions` member at all.
    let line = format!(
        r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[{{"Namespace":"App","Metrics":[{{"Name":"M"}}]}}]}},"M":1}}"#
    );
    rejected(&line, &[Reason::DimensionsNotArrayOfStringArrays]);
}

#[test]
fn aws_shape_errors() {
    rejected(r#"{"_aws":[],"M":1}"#, &[Reason::AwsNotObject]);
    rejected(r#"{"_aws":"x"}"#, &[Reason::AwsNotObject]);
    rejected(
        &format!(r#"{{"_aws":{{"Timestamp":{TS}}}}}"#),
        &[Reason::CloudWatchMetricsMissingOrNotArray],
    );
    rejected(
        &format!(r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":{{}}}}}}"#),
        &[Reason::CloudWatchMetricsMissingOrNotArray],
    );
    rejected(
        &format!(r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[]}}}}"#),
        &[Reason::NoMetricDirectives],
    );
    rejected(
        &format!(r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[1]}}}}"#),
        &[Reason::DirectiveNotObject],
    );
}

#[test]
fn every_event_level_reason_is_reported() {
    let line = r#"{"_aws":{"Timestamp":"now","CloudWatchMetrics":[{"Namespace":"AWS/Lambda","Dimensions":[["S"]],"Metrics":[{"Name":""}]},{"Namespace":"","Dimensions":"x","Metrics":7}]},"M":1}"#;
    rejected(
        line,
        &[
            Reason::TimestampNotNumber,
            Reason::NamespaceReservedAws,
            Reason::MetricDefinitionNameInvalid,
            Reason::NamespaceInvalid,
            Reason::DimensionsNotArrayOfStringArrays,
            Reason::MetricsNotArrayOfObjects,
        ],
    );
}

#[test]
fn namespaces() {
    let with_ns = |ns: &str| {
        format!(
            r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[{{"Namespace":{ns},"Dimensions":[],"Metrics":[{{"Name":"M"}}]}}]}},"M":1}}"#
        )
    };
    for ok in [r#""My App/v1.2_x#y:z-w""#, r#""a""#] {
        assert_eq!(accepted(&with_ns(ok)).points.len(), 1, "{ok}");
    }
    let long = format!("\"{}\"", "n".repeat(256));
    for bad in [
        r#""""#, r#""   ""#, r#"":x""#, r#""a*b""#, r#""é""#, "1", "null", &long,
    ] {
        rejected(&with_ns(bad), &[Reason::NamespaceInvalid]);
    }
    rejected(&with_ns(r#""AWS/Lambda""#), &[Reason::NamespaceReservedAws]);
    rejected(
        &format!(
            r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[{{"Dimensions":[],"Metrics":[{{"Name":"M"}}]}}]}},"M":1}}"#
        ),
        &[Reason::NamespaceInvalid],
    );
}

#[test]
fn units() {
    for u in Unit::ALL {
        let line = doc(
            "[]",
            &format!(r#"[{{"Name":"M","Unit":"{}"}}]"#, u.as_str()),
            r#""M":1"#,
        );
        assert_eq!(accepted(&line).points[0].unit, *u);
    }
    assert_eq!(Unit::ALL.len(), 27);
    assert_eq!(
        accepted(&doc("[]", r#"[{"Name":"M"}]"#, r#""M":1"#)).points[0].unit,
        Unit::None
    );
    for bad in [r#""ms""#, r#""milliseconds""#, r#""count""#, "1", "null"] {
        rejected(
            &doc(
                "[]",
                &format!(r#"[{{"Name":"M","Unit":{bad}}}]"#),
                r#""M":1"#,
            ),
            &[Reason::MetricInvalidUnit],
        );
    }
}

#[test]
fn storage_resolution() {
    let res = |r: &str| {
        doc(
            "[]",
            &format!(r#"[{{"Name":"M","StorageResolution":{r}}}]"#),
            r#""M":1"#,
        )
    };
    assert_eq!(accepted(&res("1")).points[0].storage_resolution, 1);
    assert_eq!(accepted(&res("60")).points[0].storage_resolution, 60);
    for bad in ["5", r#""1""#, "true", "1.0", "-1", "null"] {
        rejected(&res(bad), &[Reason::MetricInvalidStorageResolution]);
    }
}

#[test]
fn one_name_two_resolutions_is_skipped() {
    let line = format!(
        r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[{{"Namespace":"A","Dimensions":[],"Metrics":[{{"Name":"M","StorageResolution":1}},{{"Name":"N"}}]}},{{"Namespace":"B","Dimensions":[],"Metrics":[{{"Name":"M"}}]}}]}},"M":1,"N":2}}"#
    );
    let l = accepted(&line);
    assert_eq!(l.points.len(), 1);
    assert_eq!(l.points[0].name, "N");
    assert_eq!(l.warnings, [Reason::MetricConflictingStorageResolution]);
}

#[test]
fn duplicate_definition_is_ignored_and_two_namespaces_both_count() {
    let l = accepted(&doc(
        "[]",
        r#"[{"Name":"M","Unit":"Count"},{"Name":"M","Unit":"Seconds"}]"#,
        r#""M":1"#,
    ));
    assert_eq!(l.points.len(), 1);
    assert_eq!(l.points[0].unit, Unit::Count);
    assert_eq!(l.warnings, [Reason::DuplicateMetricDefinitionIgnored]);

    let line = format!(
        r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[{{"Namespace":"A","Dimensions":[],"Metrics":[{{"Name":"M"}}]}},{{"Namespace":"B","Dimensions":[],"Metrics":[{{"Name":"M"}}]}}]}},"M":3}}"#
    );
    let l = accepted(&line);
    let ns: Vec<&str> = l.points.iter().map(|p| &*p.namespace).collect();
    assert_eq!(ns, ["A", "B"]);
}

#[test]
fn missing_and_nested_targets() {
    rejected(
        &doc("[]", r#"[{"Name":"M"}]"#, r#""X":1"#),
        &[Reason::MetricTargetMissing],
    );
    rejected(
        &doc("[]", r#"[{"Name":"A.a"}]"#, r#""A":{"a":1}"#),
        &[Reason::MetricTargetMissing],
    );
    assert_eq!(
        accepted(&doc("[]", r#"[{"Name":"A.a"}]"#, r#""A.a":1"#))
            .points
            .len(),
        1
    );
    // A metric named `_aws` never reads `_aws` itself.
    rejected(
        &doc("[]", r#"[{"Name":"_aws"}]"#, r#""X":1"#),
        &[Reason::MetricTargetMissing],
    );
    // One good metric, one missing: the line is EMF and says what was skipped.
    let l = accepted(&doc("[]", r#"[{"Name":"M"},{"Name":"X"}]"#, r#""M":1"#));
    assert_eq!(l.points.len(), 1);
    assert_eq!(l.warnings, [Reason::MetricTargetMissing]);
}

#[test]
fn timestamp_window() {
    let ts = |t: &str| {
        format!(
            r#"{{"_aws":{{"Timestamp":{t},"CloudWatchMetrics":[{{"Namespace":"A","Dimensions":[],"Metrics":[{{"Name":"M"}}]}}]}},"M":1}}"#
        )
    };
    let back = NOW - 14 * 24 * 3600 * 1000;
    let ahead = NOW + 2 * 3600 * 1000;
    assert_eq!(accepted(&ts(&back.to_string())).timestamp_ms, back);
    assert_eq!(accepted(&ts(&ahead.to_string())).timestamp_ms, ahead);
    rejected(&ts(&(back - 1).to_string()), &[Reason::TimestampOutOfRange]);
    rejected(
        &ts(&(ahead + 1).to_string()),
        &[Reason::TimestampOutOfRange],
    );
    rejected(&ts("1795497869"), &[Reason::TimestampOutOfRange]);
    rejected(&ts("-1"), &[Reason::TimestampOutOfRange]);
    rejected(&ts("1e300"), &[Reason::TimestampOutOfRange]);
    rejected(&ts("18446744073709551615"), &[Reason::TimestampOutOfRange]);
    for bad in [r#""1795497869348""#, "true", "null", "[]"] {
        rejected(&ts(bad), &[Reason::TimestampNotNumber]);
    }
    assert_eq!(
        accepted(&ts("1795497869348.9")).timestamp_ms,
        1_795_497_869_348
    );

    let off = ParseOptions {
        check_timestamp: false,
        ..opts()
    };
    let old = ts("1574109732004");
    match emf::parse(Record::Text(&old), &off) {
        Verdict::Emf(l) => assert_eq!(l.timestamp_ms, 1_574_109_732_004),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_timestamp_uses_record_time() {
    let line = r#"{"_aws":{"CloudWatchMetrics":[{"Namespace":"A","Dimensions":[],"Metrics":[{"Name":"M"}]}]},"M":1}"#;
    let with_time = ParseOptions {
        record_time_ms: Some(NOW - 5),
        ..opts()
    };
    match emf::parse(Record::Text(line), &with_time) {
        Verdict::Emf(l) => {
            assert_eq!(l.timestamp_ms, NOW - 5);
            assert_eq!(l.warnings, [Reason::TimestampMissingUsedRecordTime]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(accepted(line).timestamp_ms, NOW);
}

#[test]
fn deep_nesting_is_a_parse_error_without_overflow() {
    for depth in [200, 100_000] {
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        // In a property.
        rejected(
            &doc("[]", r#"[{"Name":"M"}]"#, &format!(r#""M":1,"P":{deep}"#)),
            &[Reason::JsonParseError],
        );
        // As the metric target.
        rejected(
            &doc("[]", r#"[{"Name":"M"}]"#, &format!(r#""M":{deep}"#)),
            &[Reason::JsonParseError],
        );
        // Inside `_aws`.
        let line = format!(r#"{{"_aws":{{"Timestamp":{TS},"X":{deep},"CloudWatchMetrics":[]}}}}"#);
        rejected(&line, &[Reason::JsonParseError]);
        // As a dimension value.
        rejected(
            &doc(
                r#"[["S"]]"#,
                r#"[{"Name":"M"}]"#,
                &format!(r#""S":{deep},"M":1"#),
            ),
            &[Reason::JsonParseError],
        );
        // In the value of a Lambda JSON envelope's message.
        let line =
            format!(r#"{{"timestamp":"t","level":"INFO","message":{{"_aws":{{}},"x":{deep}}}}}"#);
        rejected(&line, &[Reason::JsonParseError]);
    }
    // Objects too.
    let deep = format!("{}1{}", "{\"a\":".repeat(300), "}".repeat(300));
    rejected(
        &doc("[]", r#"[{"Name":"M"}]"#, &format!(r#""M":1,"P":{deep}"#)),
        &[Reason::JsonParseError],
    );
    // Nesting within serde_json's limit is fine: root object + 126 levels.
    let fine = format!("{}1{}", "[".repeat(126), "]".repeat(126));
    let whole: String = doc("[]", r#"[{"Name":"M"}]"#, &format!(r#""M":1,"P":{fine}"#));
    assert!(serde_json::from_str::<Value>(&whole).is_ok());
    let too_deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let whole_deep = doc(
        "[]",
        r#"[{"Name":"M"}]"#,
        &format!(r#""M":1,"P":{too_deep}"#),
    );
    assert!(serde_json::from_str::<Value>(&whole_deep).is_err());
    rejected(&whole_deep, &[Reason::JsonParseError]);
    let l = accepted(&doc(
        "[]",
        r#"[{"Name":"M"}]"#,
        &format!(r#""M":1,"P":{fine}"#),
    ));
    assert_eq!(l.properties.len(), 1);
}

#[test]
fn size_limit() {
    let base = one("1");
    let pad = |total: usize| {
        let filler = total - base.len() - r#","P":"""#.len();
        let line = format!(
            r#"{},"P":"{}"}}"#,
            &base[..base.len() - 1],
            "x".repeat(filler)
        );
        assert_eq!(line.len(), total);
        line
    };
    let at_limit = pad(MAX_EVENT_BYTES);
    let l = accepted(&at_limit);
    assert_eq!(l.points.len(), 1);
    assert_eq!(l.properties.len(), 1);
    rejected(&pad(MAX_EVENT_BYTES + 1), &[Reason::EventTooLarge]);
    // A big plain log line is still only a log line.
    assert!(matches!(
        run(&"y".repeat(2 * MAX_EVENT_BYTES)),
        Verdict::Log
    ));
}

#[test]
fn invalid_utf8() {
    let mut bytes = one("1").into_bytes();
    let at = bytes.len() - 5;
    bytes.insert(at, 0xff);
    assert_eq!(
        match emf::parse_bytes(&bytes, &opts()) {
            Verdict::Rejected(r) => r,
            other => panic!("{other:?}"),
        },
        [Reason::JsonParseError]
    );
    assert!(matches!(
        emf::parse_bytes(b"plain \xff log", &opts()),
        Verdict::Log
    ));
    let good = one("1");
    assert!(matches!(
        emf::parse_bytes(good.as_bytes(), &opts()),
        Verdict::Emf(_)
    ));
    // Text decoded lossily: the replacement character makes a dimension value non-ASCII.
    let lossy = String::from_utf8_lossy(b"{\"_aws\":{\"Timestamp\":1795497869348,\"CloudWatchMetrics\":[{\"Namespace\":\"A\",\"Dimensions\":[[\"S\"]],\"Metrics\":[{\"Name\":\"M\"}]}]},\"S\":\"a\xffb\",\"M\":1}").into_owned();
    let l = accepted(&lossy);
    assert!(l.warnings.contains(&Reason::PublishedWithoutDimensions));
}

#[test]
fn pre_aggregated_values() {
    let l = accepted(&one(
        r#"{"Values":[1,2.5],"Counts":[3,1],"Max":2.5,"Min":1,"Count":4,"Sum":5.5}"#,
    ));
    assert_eq!(samples(&l), [Samples::Weighted(vec![(1.0, 3), (2.5, 1)])]);
    let l = accepted(&one(r#"{"Max":9,"Min":1,"Sum":20,"Count":4}"#));
    assert_eq!(
        samples(&l),
        [Samples::Stats {
            min: 1.0,
            max: 9.0,
            sum: 20.0,
            count: 4
        }]
    );
    for bad in [
        r#"{"Values":[1,2],"Counts":[1]}"#,
        r#"{"Values":[1],"Counts":[-1]}"#,
        r#"{"Values":[1],"Counts":[0.5]}"#,
        r#"{"Values":[1],"Counts":[0]}"#,
        r#"{"Values":[1]}"#,
        r#"{"Values":"x","Counts":[1]}"#,
        r#"{"Max":1,"Min":2,"Sum":3,"Count":1}"#,
        r#"{"Max":1,"Min":0,"Sum":3,"Count":0}"#,
        r#"{"Max":1,"Min":0,"Sum":3}"#,
        r#"{"Max":"1","Min":0,"Sum":3,"Count":1}"#,
    ] {
        rejected(&one(bad), &[Reason::MetricValueNotNumeric]);
    }
    let many = format!(
        r#"{{"Values":[{0}],"Counts":[{0}]}}"#,
        vec!["1"; 101].join(",")
    );
    rejected(&one(&many), &[Reason::MetricTooManyValues]);
    rejected(
        &one(r#"{"Values":[],"Counts":[]}"#),
        &[Reason::MetricValueEmptyArray],
    );
}

#[test]
fn properties_and_duplicate_keys() {
    let line = doc(
        r#"[["S"]]"#,
        r#"[{"Name":"M"}]"#,
        r#""requestId":"r-1","S":"svc","M":1,"userId":"u","requestId":"r-2","M":2,"nested":{"a":[1,2]}"#,
    );
    let l = accepted(&line);
    // The last duplicate wins, for metrics and properties alike.
    assert_eq!(samples(&l), [Samples::One(2.0)]);
    let props: Vec<(&str, &Value)> = l.properties.iter().map(|(k, v)| (&**k, v)).collect();
    assert_eq!(
        props,
        [
            ("userId", &json!("u")),
            ("requestId", &json!("r-2")),
            ("nested", &json!({"a": [1, 2]}))
        ]
    );
}

#[test]
fn duplicate_aws_last_wins() {
    let line = format!(
        r#"{{"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[]}},"M":1,"_aws":{{"Timestamp":{TS},"CloudWatchMetrics":[{{"Namespace":"A","Dimensions":[],"Metrics":[{{"Name":"M"}}]}}]}}}}"#
    );
    assert_eq!(accepted(&line).points.len(), 1);
}

#[test]
fn large_roots_use_the_index_and_keep_last_duplicate() {
    let mut members: Vec<String> = (0..60).map(|i| format!("\"p{i}\":{i}")).collect();
    members.push(r#""S":"one""#.into());
    members.push(r#""M":1"#.into());
    members.push(r#""p7":"late""#.into());
    members.push(r#""S":"two""#.into());
    let l = accepted(&doc(r#"[["S"]]"#, r#"[{"Name":"M"}]"#, &members.join(",")));
    assert_eq!(l.points[0].dimensions, vec![("S".into(), "two".into())]);
    assert_eq!(l.properties.len(), 60);
    let p7 = l.properties.iter().find(|(k, _)| k == "p7").map(|(_, v)| v);
    assert_eq!(p7, Some(&json!("late")));
    // Document order of the surviving (last) occurrences.
    assert_eq!(l.properties.last().map(|(k, _)| &**k), Some("p7"));
}

#[test]
fn escaped_strings_are_unescaped() {
    let line = doc(
        r#"[["S\u0076c"]]"#,
        r#"[{"Name":"M\"q"}]"#,
        r#""Svc":"a\/b","M\"q":1,"n\u00e4me":"x\ny""#,
    );
    let l = accepted(&line);
    let p = &l.points[0];
    assert_eq!(&*p.name, "M\"q");
    assert_eq!(p.dimensions, vec![("Svc".into(), "a/b".into())]);
    assert_eq!(l.properties, vec![("näme".into(), json!("x\ny"))]);
}

#[test]
fn lambda_prefixes() {
    let body = one("1");
    for prefix in [
        "2026-11-24T05:21:04.582Z\t3f1c6b6e-1a2b\tINFO\t",
        "2026-11-24T05:21:04.582Z\tundefined\tERROR\t",
        "[INFO]\t2026-11-24T05:21:04.996Z\t3f1c6b6e\t",
        "[CRITICAL]\t2026-11-24T05:21:04.996Z\t\t",
        "2026-11-24T05:21:04.582Z\tid\tINFO\t\n",
    ] {
        let line = format!("{prefix}{body}");
        let l = accepted(&line);
        assert_eq!(l.warnings, [Reason::LambdaPrefixStripped], "{prefix:?}");
    }
    // Text between the prefix and the JSON is not EMF.
    rejected(
        &format!("2026-11-24T05:21:04.582Z\tid\tINFO\tmetrics: {body}"),
        &[Reason::TextBeforeJson],
    );
    rejected(&format!("metrics: {body}"), &[Reason::TextBeforeJson]);
    // A prefixed document that is invalid carries both reasons.
    let line = format!("2026-11-24T05:21:04.582Z\tid\tINFO\t{}", one("null"));
    rejected(
        &line,
        &[Reason::LambdaPrefixStripped, Reason::MetricValueNull],
    );
    // Pretty-printed with CR (the Node stdout path turns LF into CR).
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).unwrap_or_default())
            .unwrap_or_default()
            .replace('\n', "\r");
    assert!(pretty.contains('\r'));
    let line = format!("2026-11-24T05:21:04.582Z\tid\tINFO\t{pretty}");
    assert_eq!(accepted(&line).points.len(), 1);
}

#[test]
fn emf_v0_at_the_root() {
    let line = r#"{"Version":"0","Timestamp":"1795497869348","CloudWatchMetrics":[{"Namespace":"A","Dimensions":[],"Metrics":[{"Name":"M"}]}],"M":1}"#;
    rejected(line, &[Reason::EmfV0RootCloudWatchMetricsIgnored]);
    let not_v0 = r#"{"Version":"1","CloudWatchMetrics":[],"M":1}"#;
    assert!(matches!(run(not_v0), Verdict::Log));
}

fn emf_value() -> Value {
    json!({"_aws": {"Timestamp": TS, "CloudWatchMetrics": [{"Namespace": "A", "Dimensions": [["S"]],
        "Metrics": [{"Name": "M", "Unit": "Count"}]}]}, "S": "svc", "M": [1, 2], "requestId": "r"})
}

#[test]
fn json_records() {
    let v = emf_value();
    match emf::parse(Record::Json(&v), &opts()) {
        Verdict::Emf(l) => {
            assert_eq!(l.points.len(), 1);
            assert_eq!(l.points[0].samples, Samples::Values(vec![1.0, 2.0]));
            assert_eq!(l.points[0].dimensions, vec![("S".into(), "svc".into())]);
            assert_eq!(l.properties, vec![("requestId".into(), json!("r"))]);
            assert!(l.warnings.is_empty());
        }
        other => panic!("{other:?}"),
    }
    for plain in [
        json!({"timestamp": "t", "level": "INFO", "message": "hello"}),
        json!("text"),
        json!(5),
        json!([1]),
    ] {
        assert!(
            matches!(emf::parse(Record::Json(&plain), &opts()), Verdict::Log),
            "{plain}"
        );
    }
    let bad = json!({"_aws": {"Timestamp": TS, "CloudWatchMetrics": [{"Namespace": "A", "Dimensions": [],
        "Metrics": [{"Name": "M"}]}]}, "M": "x"});
    match emf::parse(Record::Json(&bad), &opts()) {
        Verdict::Rejected(r) => assert_eq!(r, [Reason::MetricValueNotNumeric]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn lambda_json_envelope() {
    let inner = emf_value();
    let as_object = json!({"timestamp": "2026-11-24T05:21:04.861Z", "level": "INFO", "requestId": "q", "message": inner});
    let as_string = json!({"timestamp": "2026-11-24T05:21:04.861Z", "level": "INFO", "message": inner.to_string()});
    for record in [&as_object, &as_string] {
        match emf::parse(Record::Json(record), &opts()) {
            Verdict::Emf(l) => {
                assert_eq!(l.points.len(), 1);
                assert_eq!(l.warnings, [Reason::EmfInsideLambdaJsonEnvelope]);
                assert_eq!(l.properties, vec![("requestId".into(), json!("r"))]);
            }
            other => panic!("{other:?}"),
        }
        // The same envelope arriving as text.
        let text = record.to_string();
        let l = accepted(&text);
        assert_eq!(l.warnings, [Reason::EmfInsideLambdaJsonEnvelope]);
        assert_eq!(l.points[0].samples, Samples::Values(vec![1.0, 2.0]));
    }
    // An invalid document in the envelope: its reasons plus the envelope's.
    let bad = json!({"timestamp": "t", "level": "INFO", "message": one("null")});
    match emf::parse(Record::Json(&bad), &opts()) {
        Verdict::Rejected(r) => {
            assert_eq!(
                sorted(&r),
                [Reason::EmfInsideLambdaJsonEnvelope, Reason::MetricValueNull]
            )
        }
        other => panic!("{other:?}"),
    }
    // A message that only mentions `_aws` is a log line.
    let talk = json!({"timestamp": "t", "level": "INFO", "message": "set _aws later"});
    assert!(matches!(
        emf::parse(Record::Json(&talk), &opts()),
        Verdict::Log
    ));
    // Without `timestamp`/`level` it is no envelope.
    let other = json!({"message": inner});
    assert!(matches!(
        emf::parse(Record::Json(&other), &opts()),
        Verdict::Log
    ));
}

#[test]
fn fan_out_is_capped() {
    // 200 distinct sets × 100 metrics = 20,000 points > the cap.
    let sets: Vec<String> = (0..200).map(|i| format!("[\"d{i}\"]")).collect();
    let defs: Vec<String> = (0..100).map(|i| format!(r#"{{"Name":"m{i}"}}"#)).collect();
    let mut members: Vec<String> = (0..200).map(|i| format!("\"d{i}\":\"v\"")).collect();
    members.extend((0..100).map(|i| format!("\"m{i}\":1")));
    let line = doc(
        &format!("[{}]", sets.join(",")),
        &format!("[{}]", defs.join(",")),
        &members.join(","),
    );
    rejected(&line, &[Reason::TooManyDataPoints]);
    // 50 sets × 100 metrics = 5,000 points is fine.
    let line = doc(
        &format!("[{}]", sets[..50].join(",")),
        &format!("[{}]", defs.join(",")),
        &members.join(","),
    );
    assert_eq!(accepted(&line).points.len(), 5_000);
}

#[test]
fn reasons_codes_families_warnings() {
    assert_eq!(Reason::ALL.len(), 33);
    for r in Reason::ALL {
        assert_eq!(Reason::from_code(r.as_str()), Some(*r));
        assert!(matches!(r.family(), "parsing" | "validation"));
    }
    let parsing: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| r.family() == "parsing")
        .map(|r| r.as_str())
        .collect();
    assert_eq!(
        parsing,
        [
            "json_parse_error",
            "text_before_json",
            "event_too_large",
            "emf_inside_lambda_json_envelope"
        ]
    );
    let warnings: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| r.is_warning())
        .map(|r| r.as_str())
        .collect();
    assert_eq!(
        warnings,
        [
            "emf_inside_lambda_json_envelope",
            "lambda_prefix_stripped",
            "timestamp_missing_used_record_time",
            "dimension_set_dropped_invalid_or_missing_target",
            "published_without_dimensions",
            "duplicate_metric_definition_ignored",
        ]
    );
    assert_eq!(
        Reason::NamespaceReservedAws.as_str(),
        "namespace_reserved_AWS"
    );
}
