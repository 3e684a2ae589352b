//! The JSON shapes the parser reads, decoded leniently so that a wrong type becomes a reason code
//! instead of a decode error.
//!
//! In: JSON text (borrowed) or an already-parsed `serde_json::Value`. Out: the root as a list of
//! members, `_aws` as typed structs (see `aws`), metric targets as [`Target`] and dimension
//! values as [`DimValue`]. Strings borrow from the input unless they hold escapes.
//!
//! Only `_aws` is decoded eagerly (in the same pass that splits the root); every other root
//! member stays raw text until a directive asks for it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::aws::AwsField;
use super::small::Small;
use super::{MAX_METRIC_VALUES, Samples};

/// A JSON number, kept exact when it is an integer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    /// The exact integer value, when the number was written as an integer.
    pub(crate) fn as_int(self) -> Option<i128> {
        match self {
            Num::U(u) => Some(i128::from(u)),
            Num::I(i) => Some(i128::from(i)),
            Num::F(_) => None,
        }
    }
}

/// An object key, borrowed when it holds no escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(Key)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// The root object of a text line, split in one pass (see `scan`): `_aws` decoded (the last
/// one when it repeats), every other member kept as raw JSON text in document order.
#[derive(Default)]
pub(crate) struct TextRoot<'a> {
    pub(crate) aws: Option<AwsField<'a>>,
    pub(crate) members: Members<'a>,
}

/// Root members other than `_aws` as (key, raw JSON text), in document order; the usual line's
/// few members stay inline.
pub(crate) type Members<'a> = Small<(Cow<'a, str>, &'a str), 8>;

/// A dimension target: a string or something else.
#[derive(Debug, PartialEq)]
pub(crate) enum DimValue<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for DimValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DimVisitor)
    }
}

struct DimVisitor;

impl<'de> Visitor<'de> for DimVisitor {
    type Value = DimValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Other)
    }
    fn visit_none<E>(self) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<DimValue<'de>, E> {
        Ok(DimValue::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DimValue<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(DimValue::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DimValue<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(DimValue::Other)
    }
}

/// What a metric target holds, already judged.
#[derive(Debug, PartialEq)]
pub(crate) enum Target {
    Samples(Samples),
    Null,
    EmptyArray,
    TooManyValues,
    NotNumeric,
}

/// 2^360, the largest magnitude CloudWatch accepts.
const MAX_MAGNITUDE: f64 = 2.348_542_582_773_833_3e108;
/// 2^-360, the smallest non-zero magnitude CloudWatch accepts.
const MIN_MAGNITUDE: f64 = 4.258_030_726_458_928e-109;

/// A metric value CloudWatch would store: finite, |v| ≤ 2^360, and zero or |v| ≥ 2^-360.
#[inline(always)]
pub(crate) fn valid_metric_value(v: f64) -> bool {
    let a = v.abs();
    a.is_finite() && a <= MAX_MAGNITUDE && (a == 0.0 || a >= MIN_MAGNITUDE)
}

/// A valid metric value, or `None` for anything else (decoded leniently).
struct Sample(Option<f64>);

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SampleVisitor)
    }
}

struct SampleVisitor;

impl<'de> Visitor<'de> for SampleVisitor {
    type Value = Sample;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, v: u64) -> Result<Sample, E> {
        Ok(Sample(Some(v as f64)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Sample, E> {
        Ok(Sample(Some(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Sample, E> {
        Ok(Sample(valid_metric_value(v).then_some(v)))
    }
    fn visit_unit<E>(self) -> Result<Sample, E> {
        Ok(Sample(None))
    }
    fn visit_none<E>(self) -> Result<Sample, E> {
        Ok(Sample(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Sample, E> {
        Ok(Sample(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Sample, E> {
        Ok(Sample(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sample, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Sample(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sample, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Sample(None))
    }
}

/// An array of samples, read up to a cap; `None` when any element is not a valid value.
struct SampleArray {
    values: Option<Vec<f64>>,
    len: usize,
}

impl SampleArray {
    fn read<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<SampleArray, A::Error> {
        let cap = seq.size_hint().unwrap_or(0).min(MAX_METRIC_VALUES);
        let mut values = Some(Vec::with_capacity(cap));
        let mut len = 0usize;
        while let Some(Sample(v)) = seq.next_element::<Sample>()? {
            len += 1;
            match (&mut values, v) {
                (Some(vs), Some(v)) if vs.len() < MAX_METRIC_VALUES => vs.push(v),
                // Over the cap, or already not numeric: keep counting, store nothing more.
                (_, Some(_)) => {}
                (_, None) => values = None,
            }
        }
        Ok(SampleArray { values, len })
    }

    /// The judged array: empty, too long, not numeric, or its values.
    fn judge(self) -> Result<Vec<f64>, Target> {
        if self.len == 0 {
            Err(Target::EmptyArray)
        } else if self.len > MAX_METRIC_VALUES {
            Err(Target::TooManyValues)
        } else {
            self.values.ok_or(Target::NotNumeric)
        }
    }
}

impl<'de> Deserialize<'de> for SampleArray {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SampleArrayVisitor)
    }
}

struct SampleArrayVisitor;

impl<'de> Visitor<'de> for SampleArrayVisitor {
    type Value = SampleArray;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<SampleArray, A::Error> {
        SampleArray::read(seq)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TargetVisitor)
    }
}

struct TargetVisitor;

impl TargetVisitor {
    fn one(v: f64) -> Target {
        if valid_metric_value(v) {
            Target::Samples(Samples::One(v))
        } else {
            Target::NotNumeric
        }
    }
}

impl<'de> Visitor<'de> for TargetVisitor {
    type Value = Target;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, v: u64) -> Result<Target, E> {
        Ok(Self::one(v as f64))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Target, E> {
        Ok(Self::one(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Target, E> {
        Ok(Self::one(v))
    }
    fn visit_unit<E>(self) -> Result<Target, E> {
        Ok(Target::Null)
    }
    fn visit_none<E>(self) -> Result<Target, E> {
        Ok(Target::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Target, E> {
        Ok(Target::NotNumeric)
    }
    fn visit_str<E>(self, _: &str) -> Result<Target, E> {
        Ok(Target::NotNumeric)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Target, A::Error> {
        Ok(match SampleArray::read(seq)?.judge() {
            Ok(values) => Target::Samples(Samples::from_values(values)),
            Err(t) => t,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Target, A::Error> {
        // `{Values, Counts, ...}` (a histogram) or `{Max, Min, Sum, Count}` (a statistic set).
        let mut values = None;
        let mut counts = None;
        let (mut max, mut min, mut sum, mut count) = (None, None, None, None);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                "Values" => values = Some(map.next_value::<Lenient<SampleArray>>()?.0),
                "Counts" => counts = Some(map.next_value::<Lenient<SampleArray>>()?.0),
                "Max" => max = Some(map.next_value::<Sample>()?.0),
                "Min" => min = Some(map.next_value::<Sample>()?.0),
                "Sum" => sum = Some(map.next_value::<Sample>()?.0),
                "Count" => count = Some(map.next_value::<Sample>()?.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if values.is_some() || counts.is_some() {
            return Ok(weighted(values, counts));
        }
        Ok(match (max, min, sum, count) {
            (Some(Some(max)), Some(Some(min)), Some(Some(sum)), Some(Some(count))) => {
                stats(min, max, sum, count)
            }
            _ => Target::NotNumeric,
        })
    }
}

/// `{Values, Counts}`: both arrays of the same length 1..=100, counts whole and ≥ 0.
fn weighted(values: Option<Option<SampleArray>>, counts: Option<Option<SampleArray>>) -> Target {
    let (Some(Some(values)), Some(Some(counts))) = (values, counts) else {
        return Target::NotNumeric;
    };
    let (values, counts) = match (values.judge(), counts.judge()) {
        (Ok(v), Ok(c)) => (v, c),
        (Err(t), _) | (_, Err(t)) => return t,
    };
    if values.len() != counts.len() {
        return Target::NotNumeric;
    }
    let mut pairs = Vec::with_capacity(values.len());
    for (v, c) in values.into_iter().zip(counts) {
        match whole_count(c) {
            Some(c) => pairs.push((v, c)),
            None => return Target::NotNumeric,
        }
    }
    if pairs.iter().all(|&(_, c)| c == 0) {
        return Target::NotNumeric;
    }
    Target::Samples(Samples::Weighted(pairs))
}

/// `{Max, Min, Sum, Count}`: min ≤ max and a whole count ≥ 1.
fn stats(min: f64, max: f64, sum: f64, count: f64) -> Target {
    match whole_count(count) {
        Some(count) if count >= 1 && min <= max => Target::Samples(Samples::Stats {
            min,
            max,
            sum,
            count,
        }),
        _ => Target::NotNumeric,
    }
}

/// A count: a whole number ≥ 0 that fits in u64.
fn whole_count(c: f64) -> Option<u64> {
    // 2^64 as f64; below it every whole f64 converts exactly.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    ((0.0..LIMIT).contains(&c) && c.fract() == 0.0).then_some(c as u64)
}

/// `T` when the value has `T`'s shape, `None` (value consumed) otherwise.
struct Lenient<T>(Option<T>);

impl<'de> Deserialize<'de> for Lenient<SampleArray> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientArrayVisitor)
    }
}

struct LenientArrayVisitor;

impl<'de> Visitor<'de> for LenientArrayVisitor {
    type Value = Lenient<SampleArray>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SampleArray::read(seq).map(|a| Lenient(Some(a)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
}

/// Where a root member's value lives: raw text or a parsed `Value`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Raw<'a> {
    /// Raw JSON text of exactly one valid value.
    Text(&'a str),
    Value(&'a Value),
}

impl<'a> Raw<'a> {
    /// Decode the member as `T`; a decode error (e.g. a number out of f64 range, nesting deeper
    /// than serde_json's limit) is returned as is.
    pub(crate) fn decode<T: Deserialize<'a>>(self) -> Result<T, serde_json::Error> {
        match self {
            Raw::Text(raw) => serde_json::from_str(raw),
            Raw::Value(v) => T::deserialize(v),
        }
    }

    /// The member as a metric target.
    #[inline]
    pub(crate) fn target(self) -> Target {
        if let Raw::Text(text) = self {
            // A raw member is valid JSON, so text starting with `-` or a digit is exactly one
            // JSON number, which `f64::from_str` reads correctly rounded (and `1e400` as ∞,
            // which the range check refuses).
            if matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
                if let Some(v) = short_decimal(text) {
                    return Target::Samples(Samples::One(v));
                }
                return match text.parse::<f64>() {
                    Ok(v) if valid_metric_value(v) => Target::Samples(Samples::One(v)),
                    _ => Target::NotNumeric,
                };
            }
            if let Some(target) = flat_array(text) {
                return target;
            }
        }
        self.decode::<Target>().unwrap_or(Target::NotNumeric)
    }

    /// The member as a dimension value.
    #[inline]
    pub(crate) fn dim_value(self) -> DimValue<'a> {
        if let Raw::Text(raw) = self
            && let Some(s) = plain_string(raw)
        {
            return DimValue::Str(Cow::Borrowed(s));
        }
        self.decode::<DimValue>().unwrap_or(DimValue::Other)
    }

    /// The member as an owned `Value` (for properties).
    pub(crate) fn to_value(self) -> Result<Value, serde_json::Error> {
        match self {
            Raw::Text(raw) => match plain_string(raw) {
                Some(s) => Ok(Value::String(s.to_owned())),
                None => serde_json::from_str(raw),
            },
            Raw::Value(v) => Ok(v.clone()),
        }
    }
}

/// Powers of ten that f64 holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A non-negative number written as digits with at most one `.` and at most 15 digits in all
/// (`12`, `12.5`, `0.003`), read without the general parser: the digits form an integer
/// below 2^53 and the power of ten is exact, so one division gives the correctly rounded
/// value, the same `f64::from_str` gives. `None` for any other form (sign, exponent, more
/// digits), which the caller reads the general way.
#[inline(always)]
pub(crate) fn short_decimal(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    let mut mantissa = 0u64;
    let mut digits = 0usize;
    let mut fraction: Option<usize> = None;
    for &c in b {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                digits += 1;
            }
            b'.' if fraction.is_none() => fraction = Some(digits),
            _ => return None,
        }
    }
    let scale = match fraction {
        // A point needs digits on both sides (the JSON grammar; checked again here).
        Some(0) => return None,
        Some(at) if at == digits => return None,
        Some(at) => digits - at,
        None => 0,
    };
    if digits == 0 || digits > 15 {
        return None;
    }
    let power = EXACT_POWERS_OF_TEN.get(scale)?;
    Some(mantissa as f64 / power)
}

/// The contents of a JSON string literal without escapes, borrowed; `None` for anything else.
/// `json` must be one valid JSON value (a raw member is).
#[inline(always)]
fn plain_string(json: &str) -> Option<&str> {
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    // Valid JSON: the only special byte a string's contents can hold is a backslash.
    (super::scan::skip_plain(inner.as_bytes(), 0) == inner.len()).then_some(inner)
}

/// A JSON array of scalars (no strings, arrays or objects inside), judged as a metric target
/// without going through a deserializer; `None` for any other text. `json` must be one valid
/// JSON value, so splitting the inside on `,` yields exactly its elements.
fn flat_array(json: &str) -> Option<Target> {
    let inner = json.strip_prefix('[')?.strip_suffix(']')?;
    let bytes = inner.as_bytes();
    if memchr::memchr3(b'"', b'[', b'{', bytes).is_some() {
        return None;
    }
    if bytes.iter().all(|&b| is_ws(b)) {
        return Some(Target::EmptyArray);
    }
    let count = memchr::memchr_iter(b',', bytes).count() + 1;
    if count > MAX_METRIC_VALUES {
        return Some(Target::TooManyValues);
    }
    let mut values = Vec::with_capacity(count);
    let mut rest = bytes;
    loop {
        // Each element: optional whitespace, one scalar, optional whitespace, `,` or the end.
        let start = rest.iter().position(|&b| !is_ws(b)).unwrap_or(rest.len());
        rest = &rest[start..];
        let len = rest
            .iter()
            .position(|&b| is_ws(b) || b == b',')
            .unwrap_or(rest.len());
        let (item, tail) = rest.split_at(len);
        if !matches!(item.first(), Some(b'-' | b'0'..=b'9')) {
            // `true`, `false` or `null` inside an array.
            return Some(Target::NotNumeric);
        }
        // The element is ASCII (a JSON number), so this cannot fail; refuse it if it did.
        let item = std::str::from_utf8(item).ok()?;
        let v = short_decimal(item).or_else(|| item.parse::<f64>().ok());
        match v {
            Some(v) if valid_metric_value(v) => values.push(v),
            _ => return Some(Target::NotNumeric),
        }
        match memchr::memchr(b',', tail) {
            Some(comma) => rest = &tail[comma + 1..],
            None => break,
        }
    }
    Some(Target::Samples(Samples::from_values(values)))
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_decimals_read_as_the_general_parser_does() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        for _ in 0..200_000 {
            let digits = 1 + (next() % 15) as usize;
            let mut t: String = (0..digits)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            if digits > 1 && next() % 4 != 0 {
                let at = 1 + (next() as usize % (digits - 1));
                t.insert(at, '.');
            }
            let want: f64 = t.parse().unwrap_or(f64::NAN);
            if let Some(got) = short_decimal(&t) {
                assert_eq!(got.to_bits(), want.to_bits(), "{t}");
                checked += 1;
            }
        }
        assert!(checked > 100_000, "{checked}");
        for t in [
            "0",
            "5",
            "12.5",
            "0.003",
            "999999999999999",
            "1.00000000000001",
            "123456789.012345",
        ] {
            assert_eq!(short_decimal(t), t.parse().ok(), "{t}");
        }
        for t in [
            "",
            ".5",
            "5.",
            "1.2.3",
            "-1",
            "1e5",
            "1E5",
            "+1",
            "1234567890123456",
            "0.0000000000000001",
        ] {
            assert_eq!(short_decimal(t), None, "{t}");
        }
    }
}
