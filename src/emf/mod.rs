//! Metric lines in CloudWatch Embedded Metric Format: a cheap pre-check, the parse, validation
//! with a reason for every rejection, and the data points and properties of a valid line.
//!
//! In: one `function` record as the Telemetry API delivers it ([`Record`]).
//! Out: a [`Verdict`]: a plain log line, an [`EmfLine`] with its data points and properties, or a
//! rejection with its [`Reason`]s. Pure code: no I/O, no clock (the caller passes `now`).
//!
//! The types below are the contract with `aggregate` and `export`; the parser fills them.

use std::borrow::Cow;

/// A `function` record: a string (Text log format, Logs API) or an already-parsed JSON object
/// (JSON log format).
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    Text(&'a str),
    Json(&'a serde_json::Value),
}

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
    /// A number or an array of numbers: each value seen once.
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

mod parse;
mod reason;

pub use parse::{parse, parse_bytes};
pub use reason::Reason;
