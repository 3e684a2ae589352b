//! Metric lines in CloudWatch Embedded Metric Format: a cheap pre-check, the parse, validation
//! with a reason for every rejection, and the data points and properties of a valid line.
//!
//! In: one `function` record as the Telemetry API delivers it ([`Record`]).
//! Out: a [`Verdict`]: a plain log line, an [`EmfLine`] with its data points and properties, or a
//! rejection with its [`Reason`]s. Pure code: no I/O, no clock (the caller passes `now`).
//!
//! The types below are the contract with `aggregate` and `export`; [`parse`] fills them.
//!
//! The rules are the staged rule set of the EMF research note (section 5), with these choices:
//!
//! * **Cost.** A line with neither `_aws` nor `CloudWatchMetrics` in it is a log line after two
//!   SIMD substring searches and no JSON work. An EMF line is read in one pass by a validating
//!   scanner (`scan`: the JSON grammar as serde_json reads it, its nesting limit included) that
//!   splits the root into members, decodes `_aws` into small typed structs and leaves every
//!   other member as a borrowed slice of raw text; only the metric targets and dimension values
//!   a directive names are decoded afterwards, and the remaining members once more as
//!   [`EmfLine::properties`]. A record that is already a parsed object (JSON log format) goes
//!   through the same rules via serde. The working lists (root members, directives, metric
//!   definitions, dimension keys) keep their first items inline and are filled in place, a
//!   single metric value is [`Samples::One`], and common numbers (digits with an optional
//!   point) are read without the general parser: the usual line allocates only for its output
//!   (the points, their dimension lists and the properties).
//! * **The filter looks for the literal bytes** `_aws`: a text line whose `_aws` key is written
//!   with escapes (`"_\u0061ws"`) is a log line. A parsed object has no such blind spot.
//! * **EMF inside the Lambda JSON envelope** (`{"timestamp","level","message":<EMF>}`, as a
//!   string or an object): CloudWatch extracts nothing from it. loupe extracts the metrics and
//!   adds the warning `emf_inside_lambda_json_envelope` (family "parsing": CloudWatch would count
//!   it in `EMFParsingErrors`), so the user sees both the numbers and that CloudWatch drops them.
//!   When the embedded document is itself invalid, the line is rejected with its own reasons
//!   plus that one. A `message` that mentions `_aws` but holds no JSON object is a log line.
//! * **Rejections carry every reason found**, informational ones included (e.g. a prefixed line
//!   whose metric is `null` gives `lambda_prefix_stripped` and `metric_value_null`). An accepted
//!   line carries in [`EmfLine::warnings`] every reason recorded on the way, including the ones
//!   of metrics that were skipped while others survived.
//! * **Numbers.** A metric value must be finite with |v| ≤ 2^360, and zero or |v| ≥ 2^-360
//!   (the `PutMetricData` range). `1e400` as a metric value is `metric_value_not_numeric` (as in
//!   `EXPECTED.tsv`); `NaN`/`Infinity` literals are `json_parse_error`.
//! * **Nesting.** A line nested as deep as serde_json refuses (128 levels, the root included)
//!   is `json_parse_error`, wherever the nesting sits; nothing recurses without bound.
//!   A property serde_json cannot hold (e.g. the number `1e400`) also makes the line
//!   `json_parse_error`, as parsing the line into a `serde_json::Value` would.
//! * **Properties** are the root members that are not `_aws` and are not named by any
//!   directive as a metric or as a dimension key (even a dimension set that was dropped), in
//!   document order, once per key. For the envelope, the properties are those of the embedded
//!   document.
//! * **`{Values, Counts}`** needs both arrays, of the same length 1..=100, with whole counts
//!   ≥ 0 and not all zero; **`{Max, Min, Sum, Count}`** needs valid numbers, `Min ≤ Max` and a
//!   whole `Count ≥ 1`. Other members of those objects are ignored. Anything else is
//!   `metric_value_not_numeric`.
//! * **A missing `Dimensions`** is `dimensions_not_array_of_string_arrays` (the schema requires
//!   it); `"Dimensions": []` is read as `[[]]`.
//! * **Bounds.** A text line over [`MAX_EVENT_BYTES`] is `event_too_large` (an object record has
//!   no byte size to check; the caller bounds it). A line may yield at most
//!   [`MAX_DATA_POINTS`] points (loupe's own cap against fan-out; `too_many_data_points`).
//! * **Duplicate keys**: the last one wins, at the root, in `_aws` and in every object below.
//! * **Lambda prefixes**: one Node/.NET or Python runtime prefix is stripped (anchored at the
//!   start); the envelope's `message` is read as the document itself, without a prefix.

use std::borrow::Cow;

/// A `function` record: a string (Text log format, Logs API) or an already-parsed JSON object
/// (JSON log format).
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    Text(&'a str),
    Json(&'a serde_json::Value),
}

/// Largest line read as EMF, in bytes (CloudWatch Logs' event size limit, 1 MiB).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Metric definitions per directive.
pub const MAX_METRIC_DEFINITIONS: usize = 100;
/// Keys per dimension set.
pub const MAX_DIMENSIONS_PER_SET: usize = 30;
/// Values in one metric array (and entries of `Values`/`Counts`).
pub const MAX_METRIC_VALUES: usize = 100;
/// Characters in a namespace or a metric name.
pub const MAX_NAME_CHARS: usize = 255;
/// Characters in a dimension key.
pub const MAX_DIMENSION_KEY_CHARS: usize = 255;
/// Characters in a dimension value.
pub const MAX_DIMENSION_VALUE_CHARS: usize = 1024;
/// Data points one line may yield (directives × metrics × dimension sets); loupe's own cap, so a
/// hostile line cannot fan out into millions of points.
pub const MAX_DATA_POINTS: usize = 10_000;

/// What the parser needs besides the record.
#[derive(Clone, Copy, Debug)]
pub struct ParseOptions {
    /// Now, in ms since the epoch, for the 14 days back / 2 hours ahead timestamp window.
    pub now_ms: i64,
    /// When the platform generated the record (Telemetry `time`), used when `_aws.Timestamp` is
    /// absent.
    pub record_time_ms: Option<i64>,
    /// Apply CloudWatch's timestamp window (off only for captured fixtures).
    pub check_timestamp: bool,
    /// Drop a metric whose every dimension set is invalid instead of publishing it dimensionless.
    pub strict_dimensions: bool,
}

/// The outcome for one record. Whatever the verdict, the record still travels as a log line.
#[derive(Clone, Debug)]
pub enum Verdict<'a> {
    /// Not EMF: nothing to count.
    Log,
    /// EMF with at least one data point (warnings may be present).
    Emf(EmfLine<'a>),
    /// EMF (or meant to be) that yields no data point, with every reason found.
    Rejected(Vec<Reason>),
}

/// A valid EMF line.
#[derive(Clone, Debug, PartialEq)]
pub struct EmfLine<'a> {
    /// `_aws.Timestamp`, or the record time when it was absent.
    pub timestamp_ms: i64,
    /// One per (metric definition, surviving dimension set).
    pub points: Vec<DataPoint<'a>>,
    /// Root members that are neither metric values nor dimension values, nor `_aws`
    /// (requestId, userId, objectKey ...): they go onto an event, never onto metric attributes.
    pub properties: Vec<(Cow<'a, str>, serde_json::Value)>,
    /// Counted but not fatal (e.g. `lambda_prefix_stripped`, `published_without_dimensions`).
    pub warnings: Vec<Reason>,
}

/// One metric of one dimension set, with its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct DataPoint<'a> {
    pub namespace: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub unit: Unit,
    /// 1 (high resolution) or 60.
    pub storage_resolution: u32,
    /// (key, value), sorted by key, no duplicates.
    pub dimensions: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub samples: Samples,
}

/// The values of one metric.
#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    /// One number (written as a number or as an array of one): seen once. The parser gives
    /// this form for a single value, so the usual metric costs no allocation.
    One(f64),
    /// An array of numbers: each value seen once.
    Values(Vec<f64>),
    /// `{Values, Counts}`: each value seen `count` times.
    Weighted(Vec<(f64, u64)>),
    /// `{Max, Min, Sum, Count}`: a pre-aggregated statistic set.
    Stats {
        min: f64,
        max: f64,
        sum: f64,
        count: u64,
    },
}

impl Samples {
    /// The values seen once each (`One` and `Values`), as a slice; `None` for the other forms.
    pub fn plain_values(&self) -> Option<&[f64]> {
        match self {
            Samples::One(v) => Some(std::slice::from_ref(v)),
            Samples::Values(v) => Some(v),
            Samples::Weighted(_) | Samples::Stats { .. } => None,
        }
    }

    /// Values seen once each, as the parser gives them: `One` for a single value.
    pub(crate) fn from_values(values: Vec<f64>) -> Samples {
        match values.as_slice() {
            [one] => Samples::One(*one),
            _ => Samples::Values(values),
        }
    }
}

macro_rules! units {
    ($($variant:ident => $s:literal),* $(,)?) => {
        /// The CloudWatch units (case-sensitive names).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Unit { $($variant),* }

        impl Unit {
            pub const ALL: &'static [Unit] = &[$(Unit::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Unit::$variant => $s),* }
            }

            /// The unit named exactly `s`, as CloudWatch spells it.
            pub fn parse(s: &str) -> Option<Unit> {
                match s { $($s => Some(Unit::$variant),)* _ => None }
            }
        }
    };
}

units! {
    Seconds => "Seconds", Microseconds => "Microseconds", Milliseconds => "Milliseconds",
    Bytes => "Bytes", Kilobytes => "Kilobytes", Megabytes => "Megabytes",
    Gigabytes => "Gigabytes", Terabytes => "Terabytes",
    Bits => "Bits", Kilobits => "Kilobits", Megabits => "Megabits", Gigabits => "Gigabits",
    Terabits => "Terabits", Percent => "Percent", Count => "Count",
    BytesPerSecond => "Bytes/Second", KilobytesPerSecond => "Kilobytes/Second",
    MegabytesPerSecond => "Megabytes/Second", GigabytesPerSecond => "Gigabytes/Second",
    TerabytesPerSecond => "Terabytes/Second", BitsPerSecond => "Bits/Second",
    KilobitsPerSecond => "Kilobits/Second", MegabitsPerSecond => "Megabits/Second",
    GigabitsPerSecond => "Gigabits/Second", TerabitsPerSecond => "Terabits/Second",
    CountPerSecond => "Count/Second", None => "None",
}

mod aws;
mod json;
mod parse;
mod reason;
mod scan;
mod small;
mod text;

pub use parse::{parse, parse_bytes};
pub use reason::Reason;

impl Verdict<'_> {
    /// The same verdict, owning all its strings.
    pub fn into_owned(self) -> Verdict<'static> {
        match self {
            Verdict::Log => Verdict::Log,
            Verdict::Emf(line) => Verdict::Emf(line.into_owned()),
            Verdict::Rejected(reasons) => Verdict::Rejected(reasons),
        }
    }
}

impl EmfLine<'_> {
    /// The same line, owning all its strings.
    pub fn into_owned(self) -> EmfLine<'static> {
        EmfLine {
            timestamp_ms: self.timestamp_ms,
            points: self.points.into_iter().map(DataPoint::into_owned).collect(),
            properties: self
                .properties
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), v))
                .collect(),
            warnings: self.warnings,
        }
    }
}

impl DataPoint<'_> {
    /// The same point, owning all its strings.
    pub fn into_owned(self) -> DataPoint<'static> {
        DataPoint {
            namespace: Cow::Owned(self.namespace.into_owned()),
            name: Cow::Owned(self.name.into_owned()),
            unit: self.unit,
            storage_resolution: self.storage_resolution,
            dimensions: self
                .dimensions
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
                .collect(),
            samples: self.samples,
        }
    }
}
