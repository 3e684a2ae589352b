//! The staged parse of one record: choose the input, text to JSON, event checks, extraction.
//!
//! In: a [`Record`] and [`ParseOptions`]. Out: a [`Verdict`] borrowing from the record.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::json::{DimValue, Key, Member, Node, Num, Raw, Target, TextRoot};
use super::text::{is_json_ws, may_be_emf, mentions_aws_key, strip_lambda_prefix, strip_newline};
use super::{
    DataPoint, EmfLine, MAX_DATA_POINTS, MAX_DIMENSION_KEY_CHARS, MAX_DIMENSION_VALUE_CHARS,
    MAX_DIMENSIONS_PER_SET, MAX_EVENT_BYTES, MAX_METRIC_DEFINITIONS, MAX_NAME_CHARS, ParseOptions,
    Reason, Record, Samples, Unit, Verdict,
};

/// 14 days, in ms: the oldest timestamp CloudWatch accepts.
const WINDOW_BACK_MS: i64 = 14 * 24 * 3600 * 1000;
/// 2 hours, in ms: the furthest timestamp in the future CloudWatch accepts.
const WINDOW_AHEAD_MS: i64 = 2 * 3600 * 1000;
/// Roots with more members than this get a sorted index for lookups.
const INDEX_FROM: usize = 24;

/// Parse one `function` record: a plain log line, an EMF line with its data points, or a
/// rejection with every reason found.
pub fn parse<'a>(record: Record<'a>, opts: &ParseOptions) -> Verdict<'a> {
    match record {
        Record::Text(line) => parse_text(line, opts),
        Record::Json(value) => parse_object(value, opts),
    }
}

/// Parse one line given as raw bytes (e.g. read from a file by `loupe check`). A line that is
/// not UTF-8 cannot be JSON: it is a log line, or `json_parse_error` when it looks like EMF.
pub fn parse_bytes<'a>(bytes: &'a [u8], opts: &ParseOptions) -> Verdict<'a> {
    match std::str::from_utf8(bytes) {
        Ok(line) => parse_text(line, opts),
        Err(_) if !may_be_emf(bytes) => Verdict::Log,
        Err(_) if bytes.len() > MAX_EVENT_BYTES => Verdict::Rejected(vec![Reason::EventTooLarge]),
        Err(_) => Verdict::Rejected(vec![Reason::JsonParseError]),
    }
}

/// Stages 1-2 for a string record.
fn parse_text<'a>(line: &'a str, opts: &ParseOptions) -> Verdict<'a> {
    let line = strip_newline(line);
    if !may_be_emf(line.as_bytes()) {
        return Verdict::Log;
    }
    if line.len() > MAX_EVENT_BYTES {
        return Verdict::Rejected(vec![Reason::EventTooLarge]);
    }
    let mut found = Vec::new();
    let body = match strip_lambda_prefix(line) {
        Some(rest) => {
            found.push(Reason::LambdaPrefixStripped);
            rest
        }
        None => line,
    };
    parse_document(body, found, opts, true)
}

/// Stage 2 from "must start with `{`" on: read the text as one JSON object and evaluate it.
fn parse_document<'a>(
    text: &'a str,
    found: Vec<Reason>,
    opts: &ParseOptions,
    outer: bool,
) -> Verdict<'a> {
    let json = text.trim_start_matches(|c: char| c.is_ascii() && is_json_ws(c as u8));
    if !json.starts_with('{') {
        return if mentions_aws_key(text.as_bytes()) && text.contains('{') {
            Verdict::Rejected(vec![Reason::TextBeforeJson])
        } else {
            Verdict::Log
        };
    }
    match serde_json::from_str::<TextRoot<'a>>(json) {
        Ok(TextRoot(members)) => evaluate(Root::text(members), found, opts, outer),
        Err(_) => Verdict::Rejected(vec![Reason::JsonParseError]),
    }
}

/// Stage 0 for an object record (JSON log format).
fn parse_object<'a>(value: &'a Value, opts: &ParseOptions) -> Verdict<'a> {
    match value {
        Value::Object(map) => evaluate(Root::Value(map), Vec::new(), opts, true),
        _ => Verdict::Log,
    }
}

/// The root object, from text or from a parsed value.
enum Root<'a> {
    Text {
        members: Vec<(Cow<'a, str>, Member<'a>)>,
        /// Member positions sorted by (key, position), for large roots; empty otherwise.
        index: Vec<usize>,
    },
    Value(&'a Map<String, Value>),
}

impl<'a> Root<'a> {
    fn text(members: Vec<(Cow<'a, str>, Member<'a>)>) -> Root<'a> {
        let mut index = Vec::new();
        if members.len() > INDEX_FROM {
            index = (0..members.len()).collect();
            // Positions are < members.len(). A stable sort keeps duplicates in document order,
            // so the last occurrence of a key comes last.
            index.sort_by(|&a, &b| members[a].0.cmp(&members[b].0));
        }
        Root::Text { members, index }
    }

    /// The position of the member `key` (the last one when it repeats).
    fn position(&self, key: &str) -> Option<usize> {
        let Root::Text { members, index } = self else {
            return None;
        };
        if index.is_empty() {
            return members.iter().rposition(|(k, _)| k == key);
        }
        // Positions in `index` are all < members.len() by construction.
        let end = index.partition_point(|&i| &*members[i].0 <= key);
        let &i = index.get(end.checked_sub(1)?)?;
        (members[i].0 == key).then_some(i)
    }

    /// `_aws`, decoded. `Err` when it is there but cannot be decoded.
    fn take_aws(&mut self) -> Option<Result<Node<'a>, ()>> {
        match self {
            Root::Text { .. } => {
                let i = self.position("_aws")?;
                let Root::Text { members, .. } = self else {
                    return None;
                };
                match members.get_mut(i) {
                    Some((_, Member::Aws(node))) => Some(Ok(std::mem::replace(node, Node::Null))),
                    _ => None,
                }
            }
            Root::Value(map) => map.get("_aws").map(Node::deserialize_value),
        }
    }

    /// A member other than `_aws`.
    fn get(&self, key: &str) -> Option<Raw<'a>> {
        if key == "_aws" {
            return None;
        }
        match self {
            Root::Text { members, .. } => match members.get(self.position(key)?)?.1 {
                Member::Raw(raw) => Some(Raw::Text(raw)),
                Member::Aws(_) => None,
            },
            Root::Value(map) => map.get(key).map(Raw::Value),
        }
    }

    /// Every member but `_aws`, once per key (the last occurrence), in document order.
    fn for_each_member(
        &self,
        mut f: impl FnMut(&Cow<'a, str>, Raw<'a>) -> Result<(), ()>,
    ) -> Result<(), ()> {
        match self {
            Root::Text { members, .. } => {
                for (i, (key, member)) in members.iter().enumerate() {
                    if let Member::Raw(raw) = member
                        && self.position(key) == Some(i)
                    {
                        f(key, Raw::Text(raw))?;
                    }
                }
            }
            Root::Value(map) => {
                for (key, value) in map.iter() {
                    if key != "_aws" {
                        f(&Cow::Borrowed(key.as_str()), Raw::Value(value))?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl<'a> Node<'a> {
    fn deserialize_value(v: &'a Value) -> Result<Node<'a>, ()> {
        serde::Deserialize::deserialize(v).map_err(|_| ())
    }
}

/// The reasons found so far, each once.
struct Found(Vec<Reason>);

impl Found {
    fn add(&mut self, r: Reason) {
        if !self.0.contains(&r) {
            self.0.push(r);
        }
    }

    fn has_error(&self) -> bool {
        self.0.iter().any(|r| !r.is_warning())
    }
}

/// One directive that passed the event-level checks.
struct Directive<'n, 'a> {
    namespace: &'n Cow<'a, str>,
    sets: Vec<&'n [Node<'a>]>,
    metrics: Vec<Definition<'n, 'a>>,
}

struct Definition<'n, 'a> {
    name: &'n Cow<'a, str>,
    unit: Option<&'n Node<'a>>,
    resolution: Option<&'n Node<'a>>,
}

/// Stages 2.6-4: the root object is known; find `_aws`, check the event, extract.
fn evaluate<'a>(
    mut root: Root<'a>,
    found: Vec<Reason>,
    opts: &ParseOptions,
    outer: bool,
) -> Verdict<'a> {
    let aws = match root.take_aws() {
        Some(Ok(aws)) => aws,
        Some(Err(())) => return Verdict::Rejected(vec![Reason::JsonParseError]),
        None => return without_aws(&root, found, opts, outer),
    };
    let mut found = Found(found);
    let Some(checked) = check_event(&aws, &mut found, opts) else {
        return Verdict::Rejected(found.0);
    };
    extract(&root, checked, found, opts)
}

/// The event-level facts that survive stage 3.
struct Checked<'n, 'a> {
    timestamp_ms: i64,
    directives: Vec<Directive<'n, 'a>>,
}

/// Stage 3: every event-level rule; `None` (reasons in `found`) when any fails.
fn check_event<'n, 'a>(
    aws: &'n Node<'a>,
    found: &mut Found,
    opts: &ParseOptions,
) -> Option<Checked<'n, 'a>> {
    if !matches!(aws, Node::Obj(_)) {
        found.add(Reason::AwsNotObject);
        return None;
    }
    let mut ok = true;
    let mut fail = |found: &mut Found, r: Reason| {
        found.add(r);
        ok = false;
    };

    let timestamp_ms = match aws.get("Timestamp") {
        None => {
            found.add(Reason::TimestampMissingUsedRecordTime);
            opts.record_time_ms.unwrap_or(opts.now_ms)
        }
        Some(Node::Num(n)) => match timestamp_ms(*n) {
            Some(ms) if !opts.check_timestamp || in_window(ms, opts.now_ms) => ms,
            _ => {
                fail(found, Reason::TimestampOutOfRange);
                0
            }
        },
        Some(_) => {
            fail(found, Reason::TimestampNotNumber);
            0
        }
    };

    let mut directives = Vec::new();
    match aws.get("CloudWatchMetrics") {
        Some(Node::Arr(list)) if list.is_empty() => fail(found, Reason::NoMetricDirectives),
        Some(Node::Arr(list)) => {
            for d in list {
                match check_directive(d, found) {
                    Some(d) => directives.push(d),
                    None => ok = false,
                }
            }
        }
        _ => fail(found, Reason::CloudWatchMetricsMissingOrNotArray),
    }
    ok.then_some(Checked {
        timestamp_ms,
        directives,
    })
}

/// Stage 3 for one directive; `None` (reasons in `found`) when any rule fails.
fn check_directive<'n, 'a>(d: &'n Node<'a>, found: &mut Found) -> Option<Directive<'n, 'a>> {
    if !matches!(d, Node::Obj(_)) {
        found.add(Reason::DirectiveNotObject);
        return None;
    }
    let mut ok = true;

    let namespace = d.get("Namespace").and_then(Node::as_str);
    match namespace {
        Some(ns) if valid_namespace(ns) => {
            if ns.starts_with("AWS/") {
                found.add(Reason::NamespaceReservedAws);
                ok = false;
            }
        }
        _ => {
            found.add(Reason::NamespaceInvalid);
            ok = false;
        }
    }

    let mut sets = Vec::new();
    match d.get("Dimensions") {
        Some(Node::Arr(list)) => {
            for set in list {
                match set {
                    Node::Arr(keys) if keys.iter().all(|k| matches!(k, Node::Str(_))) => {
                        if keys.len() > MAX_DIMENSIONS_PER_SET {
                            found.add(Reason::DimensionSetOver30);
                            ok = false;
                        }
                        sets.push(keys.as_slice());
                    }
                    _ => {
                        found.add(Reason::DimensionsNotArrayOfStringArrays);
                        ok = false;
                    }
                }
            }
        }
        _ => {
            found.add(Reason::DimensionsNotArrayOfStringArrays);
            ok = false;
        }
    }

    let mut metrics = Vec::new();
    match d.get("Metrics") {
        Some(Node::Arr(list)) if list.iter().all(|m| matches!(m, Node::Obj(_))) => {
            if list.len() > MAX_METRIC_DEFINITIONS {
                found.add(Reason::MetricDefinitionsOver100);
                ok = false;
            }
            for m in list {
                match m.get("Name").and_then(Node::as_str) {
                    Some(name) if valid_name(name, MAX_NAME_CHARS) => metrics.push(Definition {
                        name,
                        unit: m.get("Unit"),
                        resolution: m.get("StorageResolution"),
                    }),
                    _ => {
                        found.add(Reason::MetricDefinitionNameInvalid);
                        ok = false;
                    }
                }
            }
        }
        _ => {
            found.add(Reason::MetricsNotArrayOfObjects);
            ok = false;
        }
    }

    let namespace = namespace?;
    ok.then_some(Directive {
        namespace,
        sets,
        metrics,
    })
}

/// Stage 4: dimension sets, metrics and data points; then the properties.
fn extract<'a>(
    root: &Root<'a>,
    checked: Checked<'_, 'a>,
    mut found: Found,
    opts: &ParseOptions,
) -> Verdict<'a> {
    let conflicting = conflicting_resolutions(&checked.directives);
    let mut points: Vec<DataPoint<'a>> = Vec::new();

    for d in &checked.directives {
        let dims = resolve_sets(root, &d.sets, &mut found, opts);
        let mut seen: Vec<&str> = Vec::with_capacity(d.metrics.len());
        for m in &d.metrics {
            if seen.contains(&&**m.name) {
                found.add(Reason::DuplicateMetricDefinitionIgnored);
                continue;
            }
            seen.push(m.name);
            let unit = match m.unit {
                None => Unit::None,
                Some(Node::Str(s)) => match Unit::parse(s) {
                    Some(u) => u,
                    None => {
                        found.add(Reason::MetricInvalidUnit);
                        continue;
                    }
                },
                Some(_) => {
                    found.add(Reason::MetricInvalidUnit);
                    continue;
                }
            };
            let Some(resolution) = storage_resolution(m.resolution) else {
                found.add(Reason::MetricInvalidStorageResolution);
                continue;
            };
            if conflicting.contains(&&**m.name) {
                found.add(Reason::MetricConflictingStorageResolution);
                continue;
            }
            let Some(raw) = root.get(m.name) else {
                found.add(Reason::MetricTargetMissing);
                continue;
            };
            let samples = match raw.decode::<Target>() {
                Ok(Target::Samples(s)) => s,
                Ok(Target::Null) => {
                    found.add(Reason::MetricValueNull);
                    continue;
                }
                Ok(Target::EmptyArray) => {
                    found.add(Reason::MetricValueEmptyArray);
                    continue;
                }
                Ok(Target::TooManyValues) => {
                    found.add(Reason::MetricTooManyValues);
                    continue;
                }
                Ok(Target::NotNumeric) => {
                    found.add(Reason::MetricValueNotNumeric);
                    continue;
                }
                Err(_) => {
                    found.add(Reason::MetricValueNotNumeric);
                    continue;
                }
            };
            if points.len() + dims.len() > MAX_DATA_POINTS {
                found.add(Reason::TooManyDataPoints);
                return Verdict::Rejected(found.0);
            }
            push_points(
                &mut points,
                d.namespace,
                m.name,
                unit,
                resolution,
                &dims,
                samples,
            );
        }
    }

    if points.is_empty() {
        if !found.has_error() {
            found.add(Reason::DirectiveHasNoMetrics);
        }
        return Verdict::Rejected(found.0);
    }
    let Ok(properties) = properties(root, &checked.directives) else {
        return Verdict::Rejected(vec![Reason::JsonParseError]);
    };
    Verdict::Emf(EmfLine {
        timestamp_ms: checked.timestamp_ms,
        points,
        properties,
        warnings: found.0,
    })
}

/// One data point per dimension set; the samples are moved into the last one.
// `&Cow` on purpose: cloning it keeps a borrowed string borrowed.
#[allow(clippy::ptr_arg)]
fn push_points<'a>(
    points: &mut Vec<DataPoint<'a>>,
    namespace: &Cow<'a, str>,
    name: &Cow<'a, str>,
    unit: Unit,
    storage_resolution: u32,
    dims: &[Vec<(Cow<'a, str>, Cow<'a, str>)>],
    samples: Samples,
) {
    let mut samples = Some(samples);
    for (i, set) in dims.iter().enumerate() {
        let s = if i + 1 == dims.len() {
            samples.take()
        } else {
            samples.clone()
        };
        let Some(samples) = s else { return };
        points.push(DataPoint {
            namespace: namespace.clone(),
            name: name.clone(),
            unit,
            storage_resolution,
            dimensions: set.clone(),
            samples,
        });
    }
}

/// Names that appear with two different valid resolutions anywhere in the event.
fn conflicting_resolutions<'n>(directives: &[Directive<'n, '_>]) -> Vec<&'n str> {
    let mut first: Vec<(&'n str, u32)> = Vec::new();
    let mut conflicting: Vec<&'n str> = Vec::new();
    for m in directives.iter().flat_map(|d| &d.metrics) {
        let Some(res) = storage_resolution(m.resolution) else {
            continue;
        };
        match first.iter().find(|(n, _)| *n == &**m.name) {
            Some(&(_, r)) if r != res && !conflicting.contains(&&**m.name) => {
                conflicting.push(m.name)
            }
            Some(_) => {}
            None => first.push((m.name, res)),
        }
    }
    conflicting
}

/// `StorageResolution`: absent is 60; otherwise the integer 1 or 60.
fn storage_resolution(node: Option<&Node>) -> Option<u32> {
    match node {
        None => Some(60),
        Some(Node::Num(n)) => match n.as_int() {
            Some(1) => Some(1),
            Some(60) => Some(60),
            _ => None,
        },
        Some(_) => None,
    }
}

/// The dimension sets of one directive, resolved against the root: each a sorted list of
/// (key, value). Invalid sets are dropped; when all are, the empty set stands in (or nothing,
/// with `strict_dimensions`).
fn resolve_sets<'a>(
    root: &Root<'a>,
    sets: &[&[Node<'a>]],
    found: &mut Found,
    opts: &ParseOptions,
) -> Vec<Vec<(Cow<'a, str>, Cow<'a, str>)>> {
    if sets.is_empty() {
        // `"Dimensions": []` is read as `[[]]`.
        return vec![Vec::new()];
    }
    let mut out: Vec<Vec<(Cow<'a, str>, Cow<'a, str>)>> = Vec::with_capacity(sets.len());
    for set in sets {
        match resolve_set(root, set) {
            Some(dims) => {
                if !out.contains(&dims) {
                    out.push(dims);
                }
            }
            None => found.add(Reason::DimensionSetDroppedInvalidOrMissingTarget),
        }
    }
    if out.is_empty() && !opts.strict_dimensions {
        found.add(Reason::PublishedWithoutDimensions);
        out.push(Vec::new());
    }
    out
}

fn resolve_set<'a>(
    root: &Root<'a>,
    keys: &[Node<'a>],
) -> Option<Vec<(Cow<'a, str>, Cow<'a, str>)>> {
    let mut dims: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(keys.len());
    for key in keys {
        let key = key.as_str()?;
        if !valid_dimension_text(key, MAX_DIMENSION_KEY_CHARS) || key.starts_with(':') {
            return None;
        }
        let value = match root.get(key)?.decode::<DimValue<'a>>() {
            Ok(DimValue::Str(v)) if valid_dimension_text(&v, MAX_DIMENSION_VALUE_CHARS) => v,
            _ => return None,
        };
        dims.push((key.clone(), value));
    }
    dims.sort_by(|a, b| a.0.cmp(&b.0));
    dims.dedup_by(|a, b| a.0 == b.0);
    Some(dims)
}

/// Root members that are neither `_aws`, nor a metric, nor a dimension named by a directive.
fn properties<'a>(
    root: &Root<'a>,
    directives: &[Directive<'_, 'a>],
) -> Result<Vec<(Cow<'a, str>, Value)>, ()> {
    let referenced = |key: &str| {
        directives.iter().any(|d| {
            d.metrics.iter().any(|m| m.name == key)
                || d.sets
                    .iter()
                    .any(|s| s.iter().any(|k| k.as_str().is_some_and(|k| k == key)))
        })
    };
    let mut out = Vec::new();
    root.for_each_member(|key, raw| {
        if !referenced(key) {
            out.push((key.clone(), raw.to_value().map_err(|_| ())?));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Stage 2.6 / 5.1: an object without `_aws`.
fn without_aws<'a>(
    root: &Root<'a>,
    found: Vec<Reason>,
    opts: &ParseOptions,
    outer: bool,
) -> Verdict<'a> {
    let version_0 = root
        .get("Version")
        .is_some_and(|v| matches!(v.decode::<Key>(), Ok(Key(s)) if s == "0"));
    if root.get("CloudWatchMetrics").is_some() && version_0 {
        return Verdict::Rejected(vec![Reason::EmfV0RootCloudWatchMetricsIgnored]);
    }
    if !outer || root.get("timestamp").is_none() || root.get("level").is_none() {
        return Verdict::Log;
    }
    let Some(message) = root.get("message") else {
        return Verdict::Log;
    };
    let inner = match message {
        Raw::Text(raw) if raw.get().starts_with('{') => {
            match serde_json::from_str::<TextRoot<'a>>(raw.get()) {
                Ok(TextRoot(members)) => {
                    let root = Root::text(members);
                    if root.position("_aws").is_none() {
                        return Verdict::Log;
                    }
                    evaluate(root, Vec::new(), opts, false)
                }
                // The whole line parsed, so the member did too; a nesting limit can still trip.
                Err(_) => Verdict::Rejected(vec![Reason::JsonParseError]),
            }
        }
        Raw::Value(Value::Object(map)) => {
            if !map.contains_key("_aws") {
                return Verdict::Log;
            }
            evaluate(Root::Value(map), Vec::new(), opts, false)
        }
        Raw::Value(Value::String(s)) => {
            if !may_be_emf(s.as_bytes()) {
                return Verdict::Log;
            }
            parse_document(s, Vec::new(), opts, false)
        }
        Raw::Text(_) => match message.decode::<Key<'a>>() {
            Ok(Key(Cow::Borrowed(s))) if may_be_emf(s.as_bytes()) => {
                parse_document(s, Vec::new(), opts, false)
            }
            // Escaped text (the usual case: `"{\"_aws\":...}"`): parse the unescaped copy and
            // own the result.
            Ok(Key(Cow::Owned(s))) if may_be_emf(s.as_bytes()) => {
                parse_document(&s, Vec::new(), opts, false).into_owned()
            }
            _ => return Verdict::Log,
        },
        Raw::Value(_) => return Verdict::Log,
    };
    let with_outer = |inner: Vec<Reason>| {
        let mut all = found.clone();
        for r in inner
            .into_iter()
            .chain([Reason::EmfInsideLambdaJsonEnvelope])
        {
            if !all.contains(&r) {
                all.push(r);
            }
        }
        all
    };
    match inner {
        Verdict::Log => Verdict::Log,
        Verdict::Emf(mut line) => {
            line.warnings = with_outer(std::mem::take(&mut line.warnings));
            Verdict::Emf(line)
        }
        Verdict::Rejected(reasons) => Verdict::Rejected(with_outer(reasons)),
    }
}

/// `_aws.Timestamp` as ms, when it is a number in i64 range (fractions are cut).
fn timestamp_ms(n: Num) -> Option<i64> {
    match n {
        Num::U(u) => i64::try_from(u).ok(),
        Num::I(i) => Some(i),
        Num::F(f) if f.is_finite() && f.abs() < 9.2e18 => Some(f as i64),
        Num::F(_) => None,
    }
}

fn in_window(ms: i64, now_ms: i64) -> bool {
    ms >= now_ms.saturating_sub(WINDOW_BACK_MS) && ms <= now_ms.saturating_add(WINDOW_AHEAD_MS)
}

/// Namespace: 1..=255 characters from `[A-Za-z0-9 ._#:/-]`, not blank, not starting with `:`.
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= MAX_NAME_CHARS
        && !ns.starts_with(':')
        && !ns.trim_matches(' ').is_empty()
        && ns.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b'_' | b'#' | b':' | b'/' | b'-')
        })
}

/// Metric name: 1..=max characters, not blank.
fn valid_name(name: &str, max: usize) -> bool {
    !name.trim().is_empty() && name.chars().count() <= max
}

/// Dimension key or value: 1..=max ASCII characters, no control characters, not blank.
fn valid_dimension_text(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii() && !b.is_ascii_control())
        && !s.bytes().all(|b| b == b' ')
}
