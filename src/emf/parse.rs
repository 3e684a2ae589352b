//! The staged parse of one record: choose the input, text to JSON, event checks, extraction.
//!
//! In: a [`Record`] and [`ParseOptions`]. Out: a [`Verdict`] borrowing from the record.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::aws::{Aws, AwsField, Definition, DimensionSets, Directive, DirectiveBody, Field};
use super::json::{DimValue, Key, Members, Num, Raw, Target, TextRoot};
use super::scan;
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
    let mut root = TextRoot::default();
    match scan::root(json, &mut root) {
        Ok(()) => evaluate_text(&root, found, opts, outer),
        Err(_) => Verdict::Rejected(vec![Reason::JsonParseError]),
    }
}

/// [`evaluate`] for a root read from text.
fn evaluate_text<'a>(
    root: &TextRoot<'a>,
    found: Vec<Reason>,
    opts: &ParseOptions,
    outer: bool,
) -> Verdict<'a> {
    let aws = root.aws.as_ref().map(Ok);
    evaluate(&Root::text(&root.members), aws, found, opts, outer)
}

/// Stage 0 for an object record (JSON log format).
fn parse_object<'a>(value: &'a Value, opts: &ParseOptions) -> Verdict<'a> {
    match value {
        Value::Object(map) => evaluate_map(map, Vec::new(), opts, true),
        _ => Verdict::Log,
    }
}

/// [`evaluate`] for a parsed object: `_aws` is decoded here.
fn evaluate_map<'a>(
    map: &'a Map<String, Value>,
    found: Vec<Reason>,
    opts: &ParseOptions,
    outer: bool,
) -> Verdict<'a> {
    let aws: Option<Result<AwsField<'a>, ()>> = map
        .get("_aws")
        .map(|v| serde::Deserialize::deserialize(v).map_err(|_| ()));
    let aws = aws.as_ref().map(|a| a.as_ref().map_err(|&()| ()));
    evaluate(&Root::Value(map), aws, found, opts, outer)
}

/// The root object, from text or from a parsed value.
enum Root<'r, 'a> {
    Text {
        members: &'r Members<'a>,
        /// Member positions sorted by (key, position), for large roots; empty otherwise.
        index: Vec<usize>,
    },
    Value(&'a Map<String, Value>),
}

impl<'r, 'a> Root<'r, 'a> {
    fn text(members: &'r Members<'a>) -> Root<'r, 'a> {
        let mut index = Vec::new();
        if members.len() > INDEX_FROM {
            index = (0..members.len()).collect();
            // Positions are < members.len(). A stable sort keeps duplicates in document order,
            // so the last occurrence of a key comes last.
            sort_positions(&mut index, &|a, b| members[a].0.cmp(&members[b].0));
        }
        Root::Text { members, index }
    }

    /// Members other than `_aws` (repeated keys counted each time).
    fn len(&self) -> usize {
        match self {
            Root::Text { members, .. } => members.len(),
            Root::Value(map) => map.len(),
        }
    }

    /// The position of the member `key` (the last one when it repeats).
    #[inline(always)]
    fn position(&self, key: &str) -> Option<usize> {
        let Root::Text { members, index, .. } = self else {
            return None;
        };
        if index.is_empty() {
            return members.iter().rposition(|(k, _)| same_key(k, key));
        }
        // Positions in `index` are all < members.len() by construction.
        let end = index.partition_point(|&i| &*members[i].0 <= key);
        let &i = index.get(end.checked_sub(1)?)?;
        (members[i].0 == key).then_some(i)
    }

    /// A member other than `_aws`.
    #[inline(always)]
    fn get(&self, key: &str) -> Option<Raw<'a>> {
        match self {
            Root::Text { members, .. } => {
                let &(_, raw) = members.get(self.position(key)?)?;
                Some(Raw::Text(raw))
            }
            Root::Value(_) if key == "_aws" => None,
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
                for (i, (key, raw)) in members.iter().enumerate() {
                    if self.position(key) == Some(i) {
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

/// A copy of a string that borrows from the line when the original does (`Cow::clone`, inlined:
/// the usual string is borrowed and costs a copy of its pointer).
// `&Cow` on purpose: a borrowed string stays borrowed.
#[allow(clippy::ptr_arg)]
#[inline(always)]
fn share<'a>(s: &Cow<'a, str>) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b),
        Cow::Owned(o) => Cow::Owned(o.clone()),
    }
}

/// String equality for keys that mostly differ in length: the lengths are compared first, so
/// the byte comparison (a library call) runs only for keys of the same length.
#[inline(always)]
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes() == b.as_bytes()
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

/// Stages 2.6-4: the root object and its `_aws` (decoded; `Err` when it could not be) are
/// known; check the event, extract.
fn evaluate<'a>(
    root: &Root<'_, 'a>,
    aws: Option<Result<&AwsField<'a>, ()>>,
    found: Vec<Reason>,
    opts: &ParseOptions,
    outer: bool,
) -> Verdict<'a> {
    let aws = match aws {
        Some(Ok(aws)) => aws,
        Some(Err(())) => return Verdict::Rejected(vec![Reason::JsonParseError]),
        None => return without_aws(root, found, opts, outer),
    };
    let mut found = Found(found);
    let AwsField::Object(aws) = aws else {
        found.add(Reason::AwsNotObject);
        return Verdict::Rejected(found.0);
    };
    match check_event(aws, &mut found, opts) {
        Some((timestamp_ms, directives)) => extract(root, timestamp_ms, directives, found, opts),
        None => Verdict::Rejected(found.0),
    }
}

/// Stage 3: every event-level rule. `None` (reasons in `found`) when any fails; otherwise the
/// timestamp and the directives, every one of them an object with well-formed members.
fn check_event<'n, 'a>(
    aws: &'n Aws<'a>,
    found: &mut Found,
    opts: &ParseOptions,
) -> Option<(i64, &'n [Directive<'a>])> {
    let mut ok = true;
    let timestamp_ms = match aws.timestamp {
        Field::Missing => {
            found.add(Reason::TimestampMissingUsedRecordTime);
            opts.record_time_ms.unwrap_or(opts.now_ms)
        }
        Field::Ok(n) => match timestamp_ms(n) {
            Some(ms) if !opts.check_timestamp || in_window(ms, opts.now_ms) => ms,
            _ => {
                found.add(Reason::TimestampOutOfRange);
                ok = false;
                0
            }
        },
        Field::Wrong => {
            found.add(Reason::TimestampNotNumber);
            ok = false;
            0
        }
    };
    let directives = match &aws.directives {
        Field::Ok(list) if list.is_empty() => {
            found.add(Reason::NoMetricDirectives);
            return None;
        }
        Field::Ok(list) => list.as_slice(),
        _ => {
            found.add(Reason::CloudWatchMetricsMissingOrNotArray);
            return None;
        }
    };
    for d in directives {
        ok &= check_directive(d, found);
    }
    ok.then_some((timestamp_ms, directives))
}

/// Stage 3 for one directive; `false` (reasons in `found`) when any rule fails.
fn check_directive(d: &Directive, found: &mut Found) -> bool {
    let Directive::Object(d) = d else {
        found.add(Reason::DirectiveNotObject);
        return false;
    };
    let mut ok = true;
    let mut fail = |r: Reason| {
        found.add(r);
        ok = false;
    };
    match &d.namespace {
        Field::Ok(ns) if valid_namespace(ns) => {
            if ns.starts_with("AWS/") {
                fail(Reason::NamespaceReservedAws);
            }
        }
        _ => fail(Reason::NamespaceInvalid),
    }
    match &d.dimensions {
        Field::Ok(sets) => {
            if sets.sets().any(|s| s.len() > MAX_DIMENSIONS_PER_SET) {
                fail(Reason::DimensionSetOver30);
            }
        }
        _ => fail(Reason::DimensionsNotArrayOfStringArrays),
    }
    match &d.metrics {
        Field::Ok(list) => {
            if list.len() > MAX_METRIC_DEFINITIONS {
                fail(Reason::MetricDefinitionsOver100);
            }
            let valid =
                |m: &Definition| matches!(&m.name, Field::Ok(n) if valid_name(n, MAX_NAME_CHARS));
            if !list.iter().all(valid) {
                fail(Reason::MetricDefinitionNameInvalid);
            }
        }
        _ => fail(Reason::MetricsNotArrayOfObjects),
    }
    ok
}

/// The parts of a directive that passed [`check_directive`].
#[allow(clippy::type_complexity)]
fn parts<'n, 'a>(
    d: &'n Directive<'a>,
) -> Option<(
    &'n Cow<'a, str>,
    &'n DimensionSets<'a>,
    &'n [Definition<'a>],
)> {
    match d {
        Directive::Object(DirectiveBody {
            namespace: Field::Ok(ns),
            dimensions: Field::Ok(sets),
            metrics: Field::Ok(defs),
        }) => Some((ns, sets, defs.as_slice())),
        _ => None,
    }
}

/// A checked definition's name (`check_directive` made sure it is a string).
fn name<'n>(m: &'n Definition) -> &'n str {
    match &m.name {
        Field::Ok(n) => n,
        _ => "",
    }
}

/// Stage 4: dimension sets, metrics and data points; then the properties.
fn extract<'a>(
    root: &Root<'_, 'a>,
    timestamp_ms: i64,
    directives: &[Directive<'a>],
    mut found: Found,
    opts: &ParseOptions,
) -> Verdict<'a> {
    let conflicting = conflicting_resolutions(directives);
    let mut points: Vec<DataPoint<'a>> = Vec::with_capacity(4);

    for (namespace, sets, defs) in directives.iter().filter_map(parts) {
        let mut dims = resolve_sets(root, sets, &mut found, opts);
        let repeats = repeat_flags(defs);
        for (i, m) in defs.iter().enumerate() {
            let Field::Ok(metric_name) = &m.name else {
                continue;
            };
            if repeats.is_repeat(defs, i) {
                found.add(Reason::DuplicateMetricDefinitionIgnored);
                continue;
            }
            let unit = match &m.unit {
                Field::Missing => Unit::None,
                Field::Ok(s) => match Unit::parse(s) {
                    Some(u) => u,
                    None => {
                        found.add(Reason::MetricInvalidUnit);
                        continue;
                    }
                },
                Field::Wrong => {
                    found.add(Reason::MetricInvalidUnit);
                    continue;
                }
            };
            let Some(resolution) = storage_resolution(&m.resolution) else {
                found.add(Reason::MetricInvalidStorageResolution);
                continue;
            };
            if conflicting.binary_search(&&**metric_name).is_ok() {
                found.add(Reason::MetricConflictingStorageResolution);
                continue;
            }
            let Some(raw) = root.get(metric_name) else {
                found.add(Reason::MetricTargetMissing);
                continue;
            };
            let samples = match raw.target() {
                Target::Samples(s) => s,
                Target::Null => {
                    found.add(Reason::MetricValueNull);
                    continue;
                }
                Target::EmptyArray => {
                    found.add(Reason::MetricValueEmptyArray);
                    continue;
                }
                Target::TooManyValues => {
                    found.add(Reason::MetricTooManyValues);
                    continue;
                }
                Target::NotNumeric => {
                    found.add(Reason::MetricValueNotNumeric);
                    continue;
                }
            };
            if points.len() + dims.len() > MAX_DATA_POINTS {
                found.add(Reason::TooManyDataPoints);
                return Verdict::Rejected(found.0);
            }
            // The directive's last definition takes the dimension lists instead of copying.
            let last = i + 1 == defs.len();
            push_points(
                &mut points,
                namespace,
                metric_name,
                unit,
                resolution,
                dims.as_mut_slice(),
                last,
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
    let Ok(properties) = properties(root, directives) else {
        return Verdict::Rejected(vec![Reason::JsonParseError]);
    };
    Verdict::Emf(EmfLine {
        timestamp_ms,
        points,
        properties,
        warnings: found.0,
    })
}

/// Which definitions repeat an earlier name of the same directive. Small lists are scanned;
/// large ones get a sorted index, so a hostile list costs n log n, not n².
enum Repeats {
    Scan,
    Flags(Vec<bool>),
}

/// Sorts positions by `cmp`, stably. The parser's index sorts (large roots, many metric
/// definitions, many dimension sets) share this one non-generic body: each closure type would
/// otherwise build its own copy of the sort into the binary.
#[inline(never)]
fn sort_positions(order: &mut [usize], cmp: &dyn Fn(usize, usize) -> std::cmp::Ordering) {
    order.sort_by(|&a, &b| cmp(a, b));
}

fn repeat_flags(defs: &[Definition]) -> Repeats {
    if defs.len() <= 16 {
        return Repeats::Scan;
    }
    let mut order: Vec<usize> = (0..defs.len()).collect();
    // Stable: equal names keep document order, so the first of each run is the original.
    sort_positions(&mut order, &|a, b| name(&defs[a]).cmp(name(&defs[b])));
    let mut flags = vec![false; defs.len()];
    for w in order.windows(2) {
        if name(&defs[w[0]]) == name(&defs[w[1]]) {
            flags[w[1]] = true;
        }
    }
    Repeats::Flags(flags)
}

impl Repeats {
    fn is_repeat(&self, defs: &[Definition], i: usize) -> bool {
        match self {
            Repeats::Scan => {
                let n = defs.get(i).map(name);
                defs.iter().take(i).any(|m| Some(name(m)) == n)
            }
            Repeats::Flags(flags) => flags.get(i).copied().unwrap_or(false),
        }
    }
}

/// One data point per dimension set; the samples are moved into the last one, and the
/// dimension lists too when `take_dims` (no later metric needs them).
// `&Cow` on purpose: cloning it keeps a borrowed string borrowed.
#[allow(clippy::ptr_arg, clippy::too_many_arguments)]
fn push_points<'a>(
    points: &mut Vec<DataPoint<'a>>,
    namespace: &Cow<'a, str>,
    name: &Cow<'a, str>,
    unit: Unit,
    storage_resolution: u32,
    dims: &mut [Dims<'a>],
    take_dims: bool,
    samples: Samples,
) {
    let mut samples = Some(samples);
    let n = dims.len();
    for (i, set) in dims.iter_mut().enumerate() {
        let s = if i + 1 == n {
            samples.take()
        } else {
            samples.clone()
        };
        let Some(samples) = s else { return };
        points.push(DataPoint {
            namespace: share(namespace),
            name: share(name),
            unit,
            storage_resolution,
            dimensions: if take_dims {
                std::mem::take(set)
            } else {
                set.iter().map(|(k, v)| (share(k), share(v))).collect()
            },
            samples,
        });
    }
}

/// Names that appear with two different valid resolutions anywhere in the event, sorted.
fn conflicting_resolutions<'n>(directives: &'n [Directive]) -> Vec<&'n str> {
    let defs = || {
        directives
            .iter()
            .filter_map(parts)
            .flat_map(|(_, _, defs)| defs)
    };
    // The common case, one resolution throughout, needs no list.
    let high = defs().any(|m| storage_resolution(&m.resolution) == Some(1));
    let standard = defs().any(|m| storage_resolution(&m.resolution) == Some(60));
    if !(high && standard) {
        return Vec::new();
    }
    let mut pairs: Vec<(&str, u32)> = defs()
        .filter_map(|m| Some((name(m), storage_resolution(&m.resolution)?)))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut names: Vec<&str> = pairs
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| w[0].0)
        .collect();
    names.dedup();
    names
}

/// `StorageResolution`: absent is 60; otherwise the integer 1 or 60.
#[inline(always)]
fn storage_resolution(field: &Field<Num>) -> Option<u32> {
    match field {
        Field::Missing => Some(60),
        Field::Ok(n) => match n.as_int() {
            Some(1) => Some(1),
            Some(60) => Some(60),
            _ => None,
        },
        Field::Wrong => None,
    }
}

type Dims<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// The dimension sets of one directive, resolved against the root: each a sorted list of
/// (key, value), each distinct set once, in document order. Invalid sets are dropped; when all
/// are, the empty set stands in (or nothing, with `strict_dimensions`).
fn resolve_sets<'a>(
    root: &Root<'_, 'a>,
    sets: &DimensionSets<'a>,
    found: &mut Found,
    opts: &ParseOptions,
) -> Resolved<'a> {
    if sets.is_empty() {
        // `"Dimensions": []` is read as `[[]]`.
        return Resolved::One(Vec::new());
    }
    if sets.len() == 1 {
        // The usual directive: one set, no list of sets to build.
        let resolved = sets.sets().next().and_then(|set| resolve_set(root, set));
        if let Some(dims) = resolved {
            return Resolved::One(dims);
        }
        found.add(Reason::DimensionSetDroppedInvalidOrMissingTarget);
        if opts.strict_dimensions {
            return Resolved::Many(Vec::new());
        }
        found.add(Reason::PublishedWithoutDimensions);
        return Resolved::One(Vec::new());
    }
    let mut out: Vec<Dims<'a>> = Vec::with_capacity(sets.len().min(16));
    for set in sets.sets() {
        match resolve_set(root, set) {
            Some(dims) => out.push(dims),
            None => found.add(Reason::DimensionSetDroppedInvalidOrMissingTarget),
        }
    }
    dedup_in_order(&mut out);
    if out.is_empty() && !opts.strict_dimensions {
        found.add(Reason::PublishedWithoutDimensions);
        out.push(Vec::new());
    }
    Resolved::Many(out)
}

/// The resolved dimension sets of a directive: one (the usual case, kept without a list) or
/// any number.
enum Resolved<'a> {
    One(Dims<'a>),
    Many(Vec<Dims<'a>>),
}

impl<'a> Resolved<'a> {
    fn len(&self) -> usize {
        match self {
            Resolved::One(_) => 1,
            Resolved::Many(v) => v.len(),
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Dims<'a>] {
        match self {
            Resolved::One(d) => std::slice::from_mut(d),
            Resolved::Many(v) => v,
        }
    }
}

/// Remove repeated sets, keeping the first of each, in n log n for large lists.
fn dedup_in_order(sets: &mut Vec<Dims>) {
    if sets.len() <= 16 {
        let mut i = 1;
        while i < sets.len() {
            if sets[..i].contains(&sets[i]) {
                sets.remove(i);
            } else {
                i += 1;
            }
        }
        return;
    }
    let mut order: Vec<usize> = (0..sets.len()).collect();
    sort_positions(&mut order, &|a, b| sets[a].cmp(&sets[b]));
    let mut keep = vec![true; sets.len()];
    for w in order.windows(2) {
        if sets[w[0]] == sets[w[1]] {
            keep[w[1]] = false;
        }
    }
    let mut flags = keep.into_iter();
    sets.retain(|_| flags.next().unwrap_or(true));
}

fn resolve_set<'a>(root: &Root<'_, 'a>, keys: &[Cow<'a, str>]) -> Option<Dims<'a>> {
    let mut dims: Dims<'a> = Vec::with_capacity(keys.len());
    for key in keys {
        if !valid_dimension_text(key, MAX_DIMENSION_KEY_CHARS) || key.starts_with(':') {
            return None;
        }
        let value = match root.get(key)?.dim_value() {
            DimValue::Str(v) if valid_dimension_text(&v, MAX_DIMENSION_VALUE_CHARS) => v,
            _ => return None,
        };
        dims.push((share(key), value));
    }
    dims.sort_by(|a, b| a.0.cmp(&b.0));
    dims.dedup_by(|a, b| a.0 == b.0);
    Some(dims)
}

/// Root members that are neither `_aws`, nor a metric, nor a dimension named by a directive.
fn properties<'a>(
    root: &Root<'_, 'a>,
    directives: &[Directive<'a>],
) -> Result<Vec<(Cow<'a, str>, Value)>, ()> {
    let named = || {
        directives
            .iter()
            .filter_map(parts)
            .flat_map(|(_, sets, defs)| defs.iter().map(name).chain(sets.keys.iter().map(|k| &**k)))
    };
    // A few names are scanned; many get a sorted list, so a hostile line stays n log n.
    const FEW: usize = 16;
    let mut few = [""; FEW];
    let mut count = 0;
    for (slot, n) in few.iter_mut().zip(named()) {
        *slot = n;
        count += 1;
    }
    let sorted: Option<Vec<&str>> = (count == FEW && named().nth(FEW).is_some()).then(|| {
        let mut v: Vec<&str> = named().collect();
        v.sort_unstable();
        v.dedup();
        v
    });
    let few = few.get(..count).unwrap_or(&[]);
    let is_named = |key: &str| match &sorted {
        Some(v) => v.binary_search(&key).is_ok(),
        None => few.iter().any(|n| same_key(n, key)),
    };
    let mut out = Vec::with_capacity(root.len().min(16));
    root.for_each_member(|key, raw| {
        if !is_named(key) {
            out.push((share(key), raw.to_value().map_err(|_| ())?));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Stage 2.6 / 5.1: an object without `_aws`.
fn without_aws<'a>(
    root: &Root<'_, 'a>,
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
        Raw::Text(raw) if raw.starts_with('{') => {
            let mut inner = TextRoot::default();
            match scan::root(raw, &mut inner) {
                Ok(()) => {
                    if inner.aws.is_none() {
                        return Verdict::Log;
                    }
                    evaluate_text(&inner, Vec::new(), opts, false)
                }
                // The whole line parsed, so the member did too; a nesting limit can still trip.
                Err(_) => Verdict::Rejected(vec![Reason::JsonParseError]),
            }
        }
        Raw::Value(Value::Object(map)) => {
            if !map.contains_key("_aws") {
                return Verdict::Log;
            }
            evaluate_map(map, Vec::new(), opts, false)
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
#[inline(always)]
fn valid_dimension_text(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii() && !b.is_ascii_control())
        && !s.bytes().all(|b| b == b' ')
}
