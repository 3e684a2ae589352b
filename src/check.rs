//! `loupe check`: reads log lines and tells, line by line, what loupe finds in them.
//!
//! In: files (or stdin) of log lines as a function prints them: raw lines, lines behind a Lambda
//! runtime's text prefix, or Lambda JSON log records. Out, on stdout: one line per finding for
//! every line that is EMF or was meant to be (`app.log:12: emf: ...`, `app.log:13: rejected:
//! ...`), or with `--summary` one JSON document of every series (count, sum, min, max, p50, p90,
//! p99) and the rejection counts. Exit status: 0, 1 when `--strict` and a line was rejected, 2 on
//! a usage error or an unreadable input.
//!
//! Lines are read through a bounded buffer: a line longer than the EMF size limit is never held
//! whole; it is skipped to its end and reported as too large when it looks like EMF. Bytes that
//! are not UTF-8 are handled like any other bad input. Nothing here reads loupe's extension
//! configuration, so no configuration warning reaches the user's terminal.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::aggregate::Aggregator;
use crate::emf::{
    self, DataPoint, MAX_EVENT_BYTES, ParseOptions, Reason, Record, Samples, Verdict,
};

const USAGE: &str = "\
usage: loupe check [--summary] [--strict] [--now <ms> | --no-timestamp-check] [FILE...]

Reads log lines (from each FILE, or stdin when there is none or FILE is -) and reports every
line that is CloudWatch Embedded Metric Format, or was meant to be: what loupe extracts from it,
or every reason it is rejected.

  --summary             print one JSON document: every series with count, sum, min, max, p50,
                        p90, p99; the number of EMF lines; rejections by reason
  --strict              exit with status 1 if any line was rejected
  --now <ms>            judge _aws.Timestamp against this time (ms since the epoch) instead of
                        the clock; CloudWatch accepts 14 days back to 2 hours ahead
  --no-timestamp-check  accept any _aws.Timestamp (for old captures)
  -h, --help            print this help
";

/// Series kept for `--summary`; a capture with more is summarised in part (and says so).
const MAX_SERIES: usize = 10_000;
/// A line is held up to this many bytes (the EMF limit plus a `\r`); longer ones are skipped.
const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES + 1;
/// Points described on one output line; the rest are counted.
const POINTS_SHOWN: usize = 4;
/// Characters of a user-supplied string quoted in a message.
const QUOTE_CHARS: usize = 60;

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Inputs in order; `-` is stdin. Empty means stdin.
    pub files: Vec<OsString>,
    pub summary: bool,
    pub strict: bool,
    /// `--now`: ms since the epoch.
    pub now_ms: Option<i64>,
    pub check_timestamp: bool,
}

/// A command line that cannot be followed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown option {0}")]
    UnknownOption(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("--now needs milliseconds since the epoch, got {0:?}")]
    BadNow(String),
    #[error("--now and --no-timestamp-check exclude each other")]
    NowAndNoCheck,
}

/// What to do after reading the arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
}

/// Reads the arguments that follow `check`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut opts = Options {
        files: Vec::new(),
        summary: false,
        strict: false,
        now_ms: None,
        check_timestamp: true,
    };
    let mut no_check = false;
    let mut args = args.into_iter();
    let mut only_files = false;
    while let Some(arg) = args.next() {
        let text = arg.to_str();
        if only_files || text == Some("-") || !text.is_some_and(|t| t.starts_with('-')) {
            // A name that is not UTF-8 cannot be an option: it is a file.
            if only_files || text.is_some() || !arg.as_encoded_bytes().starts_with(b"-") {
                opts.files.push(arg);
                continue;
            }
            return Err(UsageError::UnknownOption(
                arg.to_string_lossy().into_owned(),
            ));
        }
        match text.unwrap_or_default() {
            "--" => only_files = true,
            "-h" | "--help" => return Ok(Command::Help),
            "--summary" => opts.summary = true,
            "--strict" => opts.strict = true,
            "--no-timestamp-check" => no_check = true,
            "--now" => {
                let v = args.next().ok_or(UsageError::MissingValue("--now"))?;
                opts.now_ms = Some(parse_now(&v.to_string_lossy())?);
            }
            other => match other.strip_prefix("--now=") {
                Some(v) => opts.now_ms = Some(parse_now(v)?),
                None => return Err(UsageError::UnknownOption(other.to_string())),
            },
        }
    }
    if no_check && opts.now_ms.is_some() {
        return Err(UsageError::NowAndNoCheck);
    }
    opts.check_timestamp = !no_check;
    Ok(Command::Run(opts))
}

fn parse_now(v: &str) -> Result<i64, UsageError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| UsageError::BadNow(v.to_string()))
}

/// The `check` subcommand with the process's stdio; returns the exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let opts = match parse_args(args) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("loupe check: {e}\n\n{USAGE}");
            return 2;
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let progress = io::stderr().is_terminal();
    let status = run(&opts, &mut out, &mut io::stderr(), progress);
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            eprintln!("loupe check: cannot write the output: {e}");
            2
        }
        _ => status,
    }
}

/// Runs the check over every input; `err` gets error messages and, when `progress` is set, a
/// progress line for long inputs. Returns the exit status.
pub fn run(opts: &Options, out: &mut dyn Write, err: &mut dyn Write, progress: bool) -> i32 {
    let now_ms = opts.now_ms.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    });
    let mut checker = Checker::new(opts, now_ms, progress);
    let mut failed_input = false;
    let stdin_name: OsString = "-".into();
    let files = if opts.files.is_empty() {
        std::slice::from_ref(&stdin_name)
    } else {
        &opts.files[..]
    };
    for file in files {
        let result = if file == "-" {
            let stdin = io::stdin();
            let mut lock = stdin.lock();
            checker.input("<stdin>", &mut lock, out, err)
        } else {
            match std::fs::File::open(file) {
                Ok(f) => {
                    let mut reader = io::BufReader::with_capacity(64 * 1024, f);
                    checker.input(&file.to_string_lossy(), &mut reader, out, err)
                }
                Err(e) => Err(InputError::Read(e)),
            }
        };
        match result {
            Ok(()) => {}
            Err(InputError::Write(e)) => {
                checker.clear_progress(err);
                if e.kind() == io::ErrorKind::BrokenPipe {
                    return checker.status(failed_input);
                }
                let _ = writeln!(err, "loupe check: cannot write the output: {e}");
                return 2;
            }
            Err(InputError::Read(e)) => {
                checker.clear_progress(err);
                let _ = writeln!(err, "loupe check: {}: {e}", file.to_string_lossy());
                failed_input = true;
            }
        }
    }
    checker.clear_progress(err);
    if opts.summary {
        let written = serde_json::to_writer_pretty(&mut *out, &checker.tally.summary())
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out));
        if let Err(e) = written {
            if e.kind() != io::ErrorKind::BrokenPipe {
                let _ = writeln!(err, "loupe check: cannot write the output: {e}");
                return 2;
            }
        }
    }
    checker.status(failed_input)
}

enum InputError {
    Read(io::Error),
    Write(io::Error),
}

/// The state of one `check` run across its inputs.
struct Checker {
    summary: bool,
    strict: bool,
    parse_opts: ParseOptions,
    tally: Tally,
    progress: Option<Progress>,
}

impl Checker {
    fn new(opts: &Options, now_ms: i64, progress: bool) -> Checker {
        Checker {
            summary: opts.summary,
            strict: opts.strict,
            parse_opts: ParseOptions {
                now_ms,
                record_time_ms: Some(now_ms),
                check_timestamp: opts.check_timestamp,
                strict_dimensions: false,
            },
            tally: Tally::new(),
            progress: progress.then(Progress::new),
        }
    }

    fn status(&self, failed_input: bool) -> i32 {
        if failed_input {
            2
        } else if self.strict && self.tally.rejected_lines > 0 {
            1
        } else {
            0
        }
    }

    fn clear_progress(&mut self, err: &mut dyn Write) {
        if let Some(p) = self.progress.as_mut() {
            p.clear(err);
        }
    }

    /// Checks every line of one input, printing findings as `name:line: ...`.
    fn input(
        &mut self,
        name: &str,
        input: &mut dyn BufRead,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<(), InputError> {
        let mut lines = LineReader::new(input, MAX_LINE_BYTES);
        let mut number: u64 = 0;
        let mut report = String::new();
        loop {
            let line = match lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(()),
                Err(e) => return Err(InputError::Read(e)),
            };
            number += 1;
            report.clear();
            match line {
                Line::Complete(bytes) => {
                    check_line(bytes, &self.parse_opts, &mut self.tally, &mut report)
                }
                Line::TooLong { may_be_emf, bytes } => {
                    if may_be_emf {
                        let reasons = [Reason::EventTooLarge];
                        self.tally.rejected(&reasons);
                        describe_rejection(
                            &reasons,
                            None,
                            Some(&format!("the line has {bytes} bytes")),
                            &mut report,
                        );
                    }
                }
            }
            if !self.summary && !report.is_empty() {
                for l in report.lines() {
                    writeln!(out, "{name}:{number}: {l}").map_err(InputError::Write)?;
                }
            }
            self.tally.lines += 1;
            if number % 1024 == 0 {
                if let Some(p) = self.progress.as_mut() {
                    p.tick(name, number, &self.tally, err);
                }
            }
        }
    }
}

/// Checks one complete line and appends its report (empty for a plain log line).
fn check_line(bytes: &[u8], opts: &ParseOptions, tally: &mut Tally, report: &mut String) {
    let text = std::str::from_utf8(bytes).ok();
    // A Lambda JSON log record arrives as an object: parse it as one, as the extension would.
    let record_value = text.and_then(lambda_json_record);
    let verdict = match (&record_value, text) {
        (Some(v), _) => emf::parse(Record::Json(v), opts),
        (None, Some(t)) => emf::parse(Record::Text(t), opts),
        (None, None) => emf::parse_bytes(bytes, opts),
    };
    match verdict {
        Verdict::Log => {}
        Verdict::Emf(line) => {
            tally.emf(&line.points, &line.warnings);
            describe_emf(&line.points, report);
            if !line.warnings.is_empty() {
                let doc = document(record_value.as_ref(), text);
                for r in &line.warnings {
                    let detail = doc.as_ref().and_then(|d| explain(*r, d, opts));
                    describe_reason("warning", *r, detail.as_deref(), report);
                }
            }
        }
        Verdict::Rejected(reasons) => {
            tally.rejected(&reasons);
            let doc = document(record_value.as_ref(), text);
            let syntax = match text {
                None => Some("the line is not valid UTF-8".to_string()),
                Some(t) if reasons.contains(&Reason::JsonParseError) => json_error(t),
                Some(_) => None,
            };
            describe_rejection(
                &reasons,
                doc.as_ref().map(|d| (d, opts)),
                syntax.as_deref(),
                report,
            );
        }
    }
}

/// The line as a JSON object when it is a Lambda JSON log record: an object with `message` or
/// `level` and no `_aws` of its own. Only lines that mention `_aws` are parsed at all.
fn lambda_json_record(text: &str) -> Option<Value> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') || !may_be_emf(text.as_bytes()) {
        return None;
    }
    let value: Value = serde_json::from_str(trimmed).ok()?;
    let obj = value.as_object()?;
    (!obj.contains_key("_aws") && (obj.contains_key("message") || obj.contains_key("level")))
        .then_some(value)
}

fn may_be_emf(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"_aws").is_some()
        || memchr::memmem::find(bytes, b"CloudWatchMetrics").is_some()
}

/// Where the JSON of a line breaks: serde_json's message, the byte offset and the text there.
fn json_error(text: &str) -> Option<String> {
    let start = text.find('{')?;
    let json = text.get(start..)?;
    let e = serde_json::from_str::<serde::de::IgnoredAny>(json).err()?;
    let message = e.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message.as_str())
        .to_string();
    // serde_json counts columns in bytes from 1, on line 1 of the JSON.
    let at = start + e.column().saturating_sub(1);
    if e.line() != 1 || at >= text.len() {
        return Some(message);
    }
    let mut from = at.saturating_sub(12);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (at + 12).min(text.len());
    while !text.is_char_boundary(to) {
        to += 1;
    }
    Some(format!(
        "{message} at byte {}, near {}",
        at + 1,
        quote(&text[from..to])
    ))
}

/// The EMF document of a line, for the details of a message: the record itself, its `message`,
/// or the JSON object the text line holds after any prefix.
fn document(record: Option<&Value>, text: Option<&str>) -> Option<Value> {
    let root = match record {
        Some(v) => v.clone(),
        None => {
            let t = text?;
            let start = t.find('{')?;
            serde_json::from_str::<Value>(t.get(start..)?).ok()?
        }
    };
    if root.get("_aws").is_some() {
        return Some(root);
    }
    match root.get("message")? {
        Value::String(s) => {
            let start = s.find('{')?;
            serde_json::from_str::<Value>(s.get(start..)?).ok()
        }
        m @ Value::Object(_) => Some(m.clone()),
        _ => None,
    }
}

/// Counts for the exit status and the summary, and the series for `--summary`.
struct Tally {
    lines: u64,
    emf_lines: u64,
    rejected_lines: u64,
    rejected: BTreeMap<&'static str, u64>,
    warnings: BTreeMap<&'static str, u64>,
    aggregator: Aggregator,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            lines: 0,
            emf_lines: 0,
            rejected_lines: 0,
            rejected: BTreeMap::new(),
            warnings: BTreeMap::new(),
            aggregator: Aggregator::new(MAX_SERIES),
        }
    }

    fn emf(&mut self, points: &[DataPoint<'_>], warnings: &[Reason]) {
        self.emf_lines += 1;
        for p in points {
            self.aggregator.add_point(p);
        }
        for r in warnings {
            *self.warnings.entry(r.as_str()).or_default() += 1;
        }
    }

    fn rejected(&mut self, reasons: &[Reason]) {
        self.rejected_lines += 1;
        for r in reasons {
            *self.rejected.entry(r.as_str()).or_default() += 1;
        }
    }

    fn summary(&mut self) -> Summary<'_> {
        let refused = self.aggregator.take_refused();
        let series = self
            .aggregator
            .drain()
            .into_iter()
            .map(|s| {
                let h = &s.histogram;
                SeriesSummary {
                    namespace: s.key.namespace().to_string(),
                    name: s.key.name().to_string(),
                    unit: s.key.unit().as_str(),
                    storage_resolution: s.key.storage_resolution(),
                    dimensions: s.key.dimensions().iter().cloned().collect(),
                    count: h.count(),
                    sum: h.sum(),
                    min: h.min(),
                    max: h.max(),
                    p50: h.quantile(0.5),
                    p90: h.quantile(0.9),
                    p99: h.quantile(0.99),
                }
            })
            .collect();
        Summary {
            series,
            events: self.emf_lines,
            rejected: &self.rejected,
            warnings: &self.warnings,
            lines: self.lines,
            points_not_summarised: refused.total(),
        }
    }
}

/// The `--summary` document.
#[derive(serde::Serialize)]
struct Summary<'a> {
    series: Vec<SeriesSummary>,
    /// EMF lines accepted.
    events: u64,
    /// Rejected lines by reason (a line with two reasons counts under both).
    rejected: &'a BTreeMap<&'static str, u64>,
    /// Warnings on accepted lines, by reason.
    warnings: &'a BTreeMap<&'static str, u64>,
    lines: u64,
    /// Points left out because the input had more series than `check` keeps.
    #[serde(skip_serializing_if = "is_zero")]
    points_not_summarised: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(serde::Serialize)]
struct SeriesSummary {
    namespace: String,
    name: String,
    unit: &'static str,
    storage_resolution: u32,
    dimensions: BTreeMap<String, String>,
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
}

/// Appends `emf: N points: ns/name Unit {dims}: K values; ...`.
fn describe_emf(points: &[DataPoint<'_>], report: &mut String) {
    let n = points.len();
    let _ = write!(report, "emf: {n} point{}", plural(n));
    for (i, p) in points.iter().take(POINTS_SHOWN).enumerate() {
        report.push_str(if i == 0 { ": " } else { "; " });
        let _ = write!(
            report,
            "{}/{} {}",
            quote_bare(&p.namespace),
            quote_bare(&p.name),
            p.unit.as_str()
        );
        if p.storage_resolution == 1 {
            report.push_str(" (high resolution)");
        }
        report.push_str(" {");
        for (j, (k, v)) in p.dimensions.iter().enumerate() {
            if j > 0 {
                report.push_str(", ");
            }
            let _ = write!(report, "{}={}", quote_bare(k), quote_bare(v));
        }
        report.push_str("} ");
        match &p.samples {
            Samples::One(v) => {
                let _ = write!(report, "value {v}");
            }
            Samples::Values(v) if v.len() == 1 => {
                let _ = write!(report, "value {}", v[0]);
            }
            Samples::Values(v) => {
                let _ = write!(report, "{} values", v.len());
            }
            Samples::Weighted(pairs) => {
                let total: u64 = pairs.iter().fold(0u64, |t, (_, c)| t.saturating_add(*c));
                let _ = write!(report, "{total} values ({} distinct)", pairs.len());
            }
            Samples::Stats {
                min,
                max,
                sum,
                count,
            } => {
                let _ = write!(
                    report,
                    "statistic set: count {count}, sum {sum}, min {min}, max {max}"
                );
            }
        }
    }
    if n > POINTS_SHOWN {
        let _ = write!(report, "; and {} more", n - POINTS_SHOWN);
    }
    report.push('\n');
}

/// Appends one `rejected:` line per reason (informational ones as `note:`).
fn describe_rejection(
    reasons: &[Reason],
    doc: Option<(&Value, &ParseOptions)>,
    extra: Option<&str>,
    report: &mut String,
) {
    for r in reasons {
        let label = if r.is_warning() { "note" } else { "rejected" };
        let detail = match r {
            Reason::JsonParseError | Reason::EventTooLarge => extra.map(str::to_string),
            _ => doc.and_then(|(d, opts)| explain(*r, d, opts)),
        };
        describe_reason(label, *r, detail.as_deref(), report);
    }
}

fn describe_reason(label: &str, r: Reason, detail: Option<&str>, report: &mut String) {
    let _ = write!(report, "{label}: {}", r.as_str());
    if let Some(d) = detail {
        let _ = write!(report, " ({d})");
    }
    let hint = hint(r);
    if !hint.is_empty() {
        let _ = write!(report, ": {hint}");
    }
    report.push('\n');
}

/// What a reason means and what to change, in a few words.
pub fn hint(r: Reason) -> &'static str {
    match r.as_str() {
        "json_parse_error" => {
            "the line looks like EMF but is not valid JSON (cut short? NaN or Infinity? text \
             after the object?); CloudWatch drops the whole line"
        }
        "text_before_json" => {
            "text comes before the JSON object; an EMF line must be the JSON document alone \
             (one Lambda runtime prefix is fine)"
        }
        "event_too_large" => {
            "the line is over 1 MiB, the CloudWatch Logs event limit; flush metrics more often"
        }
        "emf_inside_lambda_json_envelope" => {
            "the EMF document sits in the `message` of a Lambda JSON log record, where \
             CloudWatch does not extract metrics; print it to stdout directly, not through \
             the logger"
        }
        "emf_v0_root_cloudwatchmetrics_ignored" => {
            "`CloudWatchMetrics` at the root is the old layout; put it under `_aws`"
        }
        "lambda_prefix_stripped" => {
            "a Lambda runtime log prefix (time, request id, level) came before the JSON and was \
             removed"
        }
        "aws_not_object" => "`_aws` must be an object",
        "cloudwatchmetrics_missing_or_not_array" => {
            "`_aws.CloudWatchMetrics` must be an array of metric directives"
        }
        "no_metric_directives" => "`_aws.CloudWatchMetrics` is empty",
        "timestamp_missing_used_record_time" => {
            "`_aws.Timestamp` is missing; the time the line was read stands in for it"
        }
        "timestamp_not_number" => "`_aws.Timestamp` must be a number: milliseconds since the epoch",
        "timestamp_out_of_range" => {
            "CloudWatch accepts timestamps from 14 days back to 2 hours ahead (for an old \
             capture use --now <ms> or --no-timestamp-check)"
        }
        "directive_not_object" => "every entry of `CloudWatchMetrics` must be an object",
        "namespace_invalid" => {
            "`Namespace` must be 1-255 letters, digits, spaces or . _ # : / -, not starting \
             with :"
        }
        "namespace_reserved_AWS" => "namespaces starting with `AWS/` are reserved for AWS",
        "dimensions_not_array_of_string_arrays" => {
            "`Dimensions` must be an array of arrays of key names, e.g. [[\"Service\"]]"
        }
        "dimension_set_over_30" => "a dimension set may hold at most 30 keys",
        "metrics_not_array_of_objects" => {
            "`Metrics` must be an array of at most 100 {\"Name\": ...} objects"
        }
        "metric_definitions_over_100" => "a directive may define at most 100 metrics",
        "metric_definition_name_invalid" => {
            "a metric `Name` must be a string of 1-255 characters, not blank"
        }
        "dimension_set_dropped_invalid_or_missing_target" => {
            "a dimension set was dropped: each of its keys needs a root member holding a \
             non-blank ASCII string of at most 1024 characters"
        }
        "published_without_dimensions" => {
            "every dimension set of the metric was dropped, so it counts without dimensions"
        }
        "duplicate_metric_definition_ignored" => {
            "a metric is defined twice in one directive; the second is ignored"
        }
        "metric_invalid_unit" => {
            "`Unit` must be a CloudWatch unit, spelled exactly (Milliseconds, Seconds, Count, \
             Bytes, Percent, None, ...)"
        }
        "metric_invalid_storage_resolution" => "`StorageResolution` must be the number 1 or 60",
        "metric_conflicting_storage_resolution" => {
            "one metric has two different StorageResolutions in the same line"
        }
        "metric_target_missing" => {
            "a metric named in `Metrics` needs a root member of that name holding its value"
        }
        "metric_value_empty_array" => "a metric value array must hold at least one number",
        "metric_too_many_values" => {
            "a metric may hold at most 100 values per line; spread them over several lines"
        }
        "metric_value_not_numeric" => {
            "a metric value must be a number, an array of numbers, {Values, Counts} or {Max, \
             Min, Sum, Count}, finite and at most 2^360 in size"
        }
        "metric_value_null" => {
            "a metric value is null: was it NaN or undefined in the code that printed it?"
        }
        "directive_has_no_metrics" => "no metric of the line could be read",
        "too_many_data_points" => {
            "the line fans out into more than 10,000 data points (directives × metrics × \
             dimension sets)"
        }
        _ => "",
    }
}

/// Which part of the document a reason is about (`Latency has 101 values`), when it can tell.
fn explain(r: Reason, doc: &Value, opts: &ParseOptions) -> Option<String> {
    let aws = doc.get("_aws");
    let directives: Vec<&Value> = aws
        .and_then(|a| a.get("CloudWatchMetrics"))
        .and_then(Value::as_array)
        .map(|d| d.iter().collect())
        .unwrap_or_default();
    let definitions = || {
        directives
            .iter()
            .filter_map(|d| d.get("Metrics").and_then(Value::as_array))
            .flatten()
            .filter_map(|m| Some((m.get("Name")?.as_str()?, m)))
    };
    let found = |items: Vec<String>| -> Option<String> {
        if items.is_empty() {
            return None;
        }
        let more = items.len().saturating_sub(3);
        let mut s = items.into_iter().take(3).collect::<Vec<_>>().join("; ");
        if more > 0 {
            let _ = write!(s, "; and {more} more");
        }
        Some(s)
    };
    match r.as_str() {
        "metric_too_many_values" => found(
            definitions()
                .filter_map(|(name, _)| {
                    let n = doc.get(name)?.as_array()?.len();
                    (n > emf::MAX_METRIC_VALUES).then(|| format!("{} has {n} values", quote(name)))
                })
                .collect(),
        ),
        "metric_value_null" => found(
            definitions()
                .filter(|(name, _)| doc.get(*name).is_some_and(Value::is_null))
                .map(|(name, _)| format!("{} is null", quote(name)))
                .collect(),
        ),
        "metric_value_empty_array" => found(
            definitions()
                .filter(|(name, _)| {
                    doc.get(*name)
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty)
                })
                .map(|(name, _)| format!("{} is []", quote(name)))
                .collect(),
        ),
        "metric_target_missing" => found(
            definitions()
                .filter(|(name, _)| doc.get(*name).is_none())
                .map(|(name, _)| format!("no member {}", quote(name)))
                .collect(),
        ),
        "metric_value_not_numeric" => found(
            definitions()
                .filter_map(|(name, _)| {
                    let v = doc.get(name)?;
                    let what = match v {
                        Value::String(s) => format!("the string {}", quote(s)),
                        Value::Bool(b) => format!("the boolean {b}"),
                        Value::Array(a) => match a.iter().find(|x| !x.is_number()) {
                            Some(x) => format!("an array holding {}", short_json(x)),
                            None => return None,
                        },
                        Value::Object(_) => {
                            "an object that is neither {Values, Counts} nor {Max, Min, Sum, Count}"
                                .to_string()
                        }
                        _ => return None,
                    };
                    Some(format!("{} is {what}", quote(name)))
                })
                .collect(),
        ),
        "metric_invalid_unit" => found(
            definitions()
                .filter_map(|(name, m)| {
                    let unit = m.get("Unit")?;
                    match unit.as_str() {
                        Some(u) if emf::Unit::parse(u).is_some() => None,
                        Some(u) => Some(match suggest_unit(u) {
                            Some(s) => {
                                format!("{} has Unit {}; did you mean {s}?", quote(name), quote(u))
                            }
                            None => format!("{} has Unit {}", quote(name), quote(u)),
                        }),
                        None => Some(format!("{} has Unit {}", quote(name), short_json(unit))),
                    }
                })
                .collect(),
        ),
        "metric_invalid_storage_resolution" => found(
            definitions()
                .filter_map(|(name, m)| {
                    let res = m.get("StorageResolution")?;
                    let ok = res.as_u64().is_some_and(|r| r == 1 || r == 60);
                    (!ok).then(|| {
                        format!("{} has StorageResolution {}", quote(name), short_json(res))
                    })
                })
                .collect(),
        ),
        "namespace_invalid" | "namespace_reserved_AWS" => found(
            directives
                .iter()
                .filter_map(|d| d.get("Namespace"))
                .map(|ns| format!("Namespace {}", short_json(ns)))
                .collect(),
        ),
        "metric_definitions_over_100" => found(
            directives
                .iter()
                .filter_map(|d| d.get("Metrics")?.as_array())
                .filter(|m| m.len() > emf::MAX_METRIC_DEFINITIONS)
                .map(|m| format!("a directive defines {} metrics", m.len()))
                .collect(),
        ),
        "dimension_set_over_30" => found(
            directives
                .iter()
                .filter_map(|d| d.get("Dimensions")?.as_array())
                .flatten()
                .filter_map(Value::as_array)
                .filter(|set| set.len() > emf::MAX_DIMENSIONS_PER_SET)
                .map(|set| format!("a set has {} keys", set.len()))
                .collect(),
        ),
        "dimension_set_dropped_invalid_or_missing_target" | "published_without_dimensions" => {
            let mut seen = Vec::new();
            let keys = directives
                .iter()
                .filter_map(|d| d.get("Dimensions")?.as_array())
                .flatten()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(Value::as_str);
            for k in keys {
                let problem = match doc.get(k) {
                    None => "is missing",
                    Some(Value::String(s)) if s.trim().is_empty() => "is blank",
                    Some(Value::String(s)) if !s.is_ascii() => "is not ASCII",
                    Some(Value::String(s))
                        if s.chars().count() > emf::MAX_DIMENSION_VALUE_CHARS =>
                    {
                        "is over 1024 characters"
                    }
                    Some(Value::String(s)) if s.chars().any(char::is_control) => {
                        "holds a control character"
                    }
                    Some(Value::String(_)) => continue,
                    Some(_) => "is not a string",
                };
                let item = format!("dimension {} {problem}", quote(k));
                if !seen.contains(&item) {
                    seen.push(item);
                }
            }
            found(seen)
        }
        "timestamp_out_of_range" => {
            let ts = aws?.get("Timestamp")?.as_f64()?;
            let hours = (ts - opts.now_ms as f64) / 3_600_000.0;
            Some(if hours < 0.0 {
                format!("Timestamp {ts} is {:.1} days before now", -hours / 24.0)
            } else {
                format!("Timestamp {ts} is {hours:.1} hours after now")
            })
        }
        "directive_has_no_metrics" => found(
            directives
                .iter()
                .filter(|d| {
                    d.get("Metrics")
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty)
                })
                .map(|d| match d.get("Namespace").and_then(Value::as_str) {
                    Some(ns) => format!("the directive of {} has \"Metrics\": []", quote(ns)),
                    None => "a directive has \"Metrics\": []".to_string(),
                })
                .collect(),
        ),
        "timestamp_not_number" => Some(format!(
            "Timestamp is {}",
            short_json(aws?.get("Timestamp")?)
        )),
        _ => None,
    }
}

/// The CloudWatch unit a misspelt one most likely meant (`ms` → `Milliseconds`).
fn suggest_unit(u: &str) -> Option<&'static str> {
    let lower = u.to_ascii_lowercase();
    if let Some(exact) = emf::Unit::ALL
        .iter()
        .find(|unit| unit.as_str().eq_ignore_ascii_case(u))
    {
        return Some(exact.as_str());
    }
    Some(match lower.as_str() {
        "ms" | "msec" | "millis" | "millisecond" => "Milliseconds",
        "s" | "sec" | "secs" | "second" => "Seconds",
        "us" | "µs" | "usec" | "micros" | "microsecond" => "Microseconds",
        "b" | "byte" => "Bytes",
        "kb" | "kilobyte" => "Kilobytes",
        "mb" | "megabyte" => "Megabytes",
        "gb" | "gigabyte" => "Gigabytes",
        "%" | "percentage" | "pct" => "Percent",
        "count" | "counts" | "n" => "Count",
        _ => return None,
    })
}

/// A user string in quotes, cut to a readable length.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == QUOTE_CHARS {
            q.push('…');
            break;
        }
        q.extend(c.escape_debug());
    }
    q.push('"');
    q
}

/// A user string shown bare when it is plain, quoted when it holds anything surprising.
fn quote_bare(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().count() <= QUOTE_CHARS
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '{' | '}' | ',' | ';' | '=' | '"'));
    if plain { s.to_string() } else { quote(s) }
}

fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > QUOTE_CHARS {
        let cut: String = s.chars().take(QUOTE_CHARS).collect();
        format!("{cut}…")
    } else {
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One input line: whole, or too long to hold (then only its length and whether it mentions
/// `_aws` or `CloudWatchMetrics` are known).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Without its `\n`.
    Complete(&'a [u8]),
    TooLong {
        may_be_emf: bool,
        bytes: u64,
    },
}

/// Splits a byte stream into lines, holding at most `limit` bytes of one line.
pub struct LineReader<'r> {
    input: &'r mut dyn BufRead,
    buf: Vec<u8>,
    limit: usize,
}

/// The longest needle searched across a chunk boundary, minus one.
const CARRY: usize = "CloudWatchMetrics".len() - 1;

impl<'r> LineReader<'r> {
    pub fn new(input: &'r mut dyn BufRead, limit: usize) -> LineReader<'r> {
        LineReader {
            input,
            buf: Vec::new(),
            limit,
        }
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut read_any = false;
        // Set once the line passes `limit`: (saw a needle, bytes so far, last bytes kept).
        let mut overflow: Option<(bool, u64, Vec<u8>)> = None;
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                if !read_any {
                    return Ok(None);
                }
                break;
            }
            read_any = true;
            let (part, used, end) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            match overflow.as_mut() {
                None if self.buf.len() + part.len() <= self.limit => {
                    self.buf.extend_from_slice(part)
                }
                None => {
                    let mut carry = Vec::with_capacity(2 * CARRY);
                    let seen = scan(&mut carry, &self.buf) | scan(&mut carry, part);
                    let bytes = (self.buf.len() + part.len()) as u64;
                    overflow = Some((seen, bytes, carry));
                    self.buf.clear();
                    self.buf.shrink_to(self.limit.min(64 * 1024));
                }
                Some((seen, bytes, carry)) => {
                    *seen |= scan(carry, part);
                    *bytes += part.len() as u64;
                }
            }
            self.input.consume(used);
            if end {
                break;
            }
        }
        Ok(Some(match overflow {
            None => Line::Complete(&self.buf),
            Some((may_be_emf, bytes, _)) => Line::TooLong { may_be_emf, bytes },
        }))
    }
}

/// Whether `part` (preceded by the carried tail of the bytes before it) holds `_aws` or
/// `CloudWatchMetrics`; keeps the last bytes in `carry` for the next part.
fn scan(carry: &mut Vec<u8>, part: &[u8]) -> bool {
    carry.extend_from_slice(&part[..part.len().min(CARRY)]);
    let seen = may_be_emf(carry) || may_be_emf(part);
    if part.len() >= CARRY {
        carry.clear();
        carry.extend_from_slice(&part[part.len() - CARRY..]);
    } else {
        let cut = carry.len().saturating_sub(CARRY);
        carry.drain(..cut);
    }
    seen
}

/// A progress line on a terminal's stderr, once the input has taken a second, at most four
/// times a second.
struct Progress {
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            last: None,
            shown: false,
        }
    }

    fn tick(&mut self, name: &str, line: u64, tally: &Tally, err: &mut dyn Write) {
        let now = Instant::now();
        if now.duration_since(self.started) < Duration::from_secs(1)
            || self
                .last
                .is_some_and(|l| now.duration_since(l) < Duration::from_millis(250))
        {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let _ = write!(
            err,
            "\r\x1b[2Kloupe check: {name}: line {line}, {} EMF, {} rejected",
            tally.emf_lines, tally.rejected_lines
        );
        let _ = err.flush();
    }

    fn clear(&mut self, err: &mut dyn Write) {
        if self.shown {
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, UsageError> {
        parse_args(list.iter().map(OsString::from))
    }

    fn run_on(input: &str, opts: &Options) -> (String, i32) {
        let mut out = Vec::new();
        let mut checker = Checker::new(opts, opts.now_ms.unwrap_or(0), false);
        let mut reader = input.as_bytes();
        let r = checker.input("t.log", &mut reader, &mut out, &mut Vec::new());
        assert!(r.is_ok());
        (
            String::from_utf8(out).expect("utf-8 output"),
            checker.status(false),
        )
    }

    fn opts() -> Options {
        Options {
            files: vec![],
            summary: false,
            strict: true,
            now_ms: None,
            check_timestamp: false,
        }
    }

    #[test]
    fn flags_and_files() {
        assert_eq!(
            args(&["--summary", "a.log", "-", "--strict", "--now", "123"]),
            Ok(Command::Run(Options {
                files: vec!["a.log".into(), "-".into()],
                summary: true,
                strict: true,
                now_ms: Some(123),
                check_timestamp: true,
            }))
        );
        assert_eq!(args(&["-h"]), Ok(Command::Help));
        let Ok(Command::Run(o)) = args(&["--no-timestamp-check", "--", "--strict"]) else {
            panic!("parsed")
        };
        assert_eq!(o.files, vec![OsString::from("--strict")]);
        assert!(!o.check_timestamp && !o.strict);
        assert_eq!(
            args(&["--now=5"]).map(|c| matches!(c, Command::Run(o) if o.now_ms == Some(5))),
            Ok(true)
        );
    }

    #[test]
    fn usage_errors() {
        assert_eq!(
            args(&["--sumary"]),
            Err(UsageError::UnknownOption("--sumary".into()))
        );
        assert_eq!(args(&["--now"]), Err(UsageError::MissingValue("--now")));
        assert_eq!(
            args(&["--now", "soon"]),
            Err(UsageError::BadNow("soon".into()))
        );
        assert_eq!(args(&["--now", "-5"]), Err(UsageError::BadNow("-5".into())));
        assert_eq!(
            args(&["--now", "1", "--no-timestamp-check"]),
            Err(UsageError::NowAndNoCheck)
        );
    }

    #[test]
    fn lines_are_split_and_bounded() {
        let long = format!("{}_aws{}", "x".repeat(40), "y".repeat(40));
        let input = format!("one\r\ntwo\n{long}\n\nlast");
        let mut bytes = input.as_bytes();
        let mut r = LineReader::new(&mut bytes, 50);
        assert_eq!(r.next_line().unwrap(), Some(Line::Complete(b"one\r")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Complete(b"two")));
        assert_eq!(
            r.next_line().unwrap(),
            Some(Line::TooLong {
                may_be_emf: true,
                bytes: 84
            })
        );
        assert_eq!(r.next_line().unwrap(), Some(Line::Complete(b"")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Complete(b"last")));
        assert_eq!(r.next_line().unwrap(), None);
    }

    #[test]
    fn a_needle_split_across_reads_is_found() {
        // A reader that hands out 7 bytes at a time, so `CloudWatchMetrics` straddles reads.
        let text = format!(
            "{}CloudWatchMetrics{}\nok\n",
            "a".repeat(30),
            "b".repeat(30)
        );
        for split in 1..20 {
            let mut r = io::BufReader::with_capacity(split, text.as_bytes());
            let mut lines = LineReader::new(&mut r, 20);
            assert_eq!(
                lines.next_line().unwrap(),
                Some(Line::TooLong {
                    may_be_emf: true,
                    bytes: 77
                }),
                "split {split}"
            );
            assert_eq!(lines.next_line().unwrap(), Some(Line::Complete(b"ok")));
        }
        let plain = format!("{}\n", "z".repeat(100));
        let mut bytes = plain.as_bytes();
        let mut lines = LineReader::new(&mut bytes, 20);
        assert_eq!(
            lines.next_line().unwrap(),
            Some(Line::TooLong {
                may_be_emf: false,
                bytes: 100
            })
        );
    }

    const GOOD: &str = r#"{"_aws":{"Timestamp":1795497663709,"CloudWatchMetrics":[{"Namespace":"MyApp","Dimensions":[["Service"]],"Metrics":[{"Name":"Latency","Unit":"Milliseconds"}]}]},"Service":"api","Latency":[1,2,3]}"#;

    #[test]
    fn emf_lines_are_described() {
        let (out, status) = run_on(&format!("hello\n{GOOD}\n"), &opts());
        assert_eq!(
            out,
            "t.log:2: emf: 1 point: MyApp/Latency Milliseconds {Service=api} 3 values\n"
        );
        assert_eq!(status, 0);
    }

    #[test]
    fn rejections_name_the_metric_and_the_fix() {
        let values: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let line = GOOD.replace("[1,2,3]", &format!("[{}]", values.join(",")));
        let (out, status) = run_on(&line, &opts());
        assert!(
            out.starts_with(
                "t.log:1: rejected: metric_too_many_values (\"Latency\" has 101 values): "
            ),
            "{out}"
        );
        assert_eq!(status, 1);

        let line = GOOD.replace("\"Unit\":\"Milliseconds\"", "\"Unit\":\"ms\"");
        let (out, _) = run_on(&line, &opts());
        assert!(
            out.contains(
                "metric_invalid_unit (\"Latency\" has Unit \"ms\"; did you mean Milliseconds?)"
            ),
            "{out}"
        );
    }

    #[test]
    fn invalid_utf8_is_handled() {
        let mut input = b"{\"_aws\": \xff\xfe}\n".to_vec();
        input.extend_from_slice(b"plain \xff log\n");
        let mut out = Vec::new();
        let mut checker = Checker::new(&opts(), 0, false);
        let mut reader = &input[..];
        let r = checker.input("t.log", &mut reader, &mut out, &mut Vec::new());
        assert!(r.is_ok());
        let out = String::from_utf8(out).expect("utf-8");
        assert!(
            out.starts_with("t.log:1: rejected: json_parse_error"),
            "{out}"
        );
        assert_eq!(out.lines().count(), 1);
        assert_eq!(checker.tally.lines, 2);
    }

    #[test]
    fn quoting_keeps_messages_readable() {
        assert_eq!(quote_bare("api"), "api");
        assert_eq!(quote_bare("a b"), "\"a b\"");
        assert_eq!(quote("x\ny"), "\"x\\ny\"");
        assert_eq!(quote(&"é".repeat(100)).chars().count(), QUOTE_CHARS + 3);
        assert_eq!(suggest_unit("milliseconds"), Some("Milliseconds"));
        assert_eq!(suggest_unit("furlongs"), None);
    }

    #[test]
    fn every_reason_has_a_hint() {
        for r in Reason::ALL {
            assert!(!hint(*r).is_empty(), "{}", r.as_str());
        }
    }
}
