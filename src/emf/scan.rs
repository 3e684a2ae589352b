//! A validating JSON scanner for the root of a metric line: one pass over the text that checks
//! the whole document against RFC 8259 (as serde_json reads it), splits the root object into
//! members, and decodes `_aws` into the typed structs of `aws`. Every other member stays a
//! borrowed slice of raw JSON text, decoded later only if a directive names it.
//!
//! In: the text of one document and an empty [`TextRoot`]. Out: that root filled in place (its
//! lists keep their first items inline, so nothing large is moved), or an error (the line is
//! not one JSON object). No recursion beyond serde_json's nesting limit; strings with escapes
//! are unescaped by serde_json itself, so both readers agree on what a string is. Plain
//! integers (a timestamp) are read directly.

use std::borrow::Cow;

use super::aws::{
    Aws, AwsField, Definition, Definitions, DimensionSets, Directive, DirectiveBody, Directives,
    Field,
};
use super::json::{Num, TextRoot};

/// serde_json refuses a document whose containers nest this deep (the root counts).
const MAX_DEPTH: usize = 128;

/// Why the text is not one JSON object (the detail is for tests; callers see "not JSON").
#[derive(Debug, PartialEq)]
pub(crate) struct NotJson;

type Result<T> = std::result::Result<T, NotJson>;

/// Split one JSON object (with optional surrounding whitespace) into its members, filling
/// `root` (fresh, from `TextRoot::default()`) in place: its inline lists are large and are
/// never moved.
pub(crate) fn root<'a>(text: &'a str, root: &mut TextRoot<'a>) -> Result<()> {
    let mut c = Cursor {
        src: text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    c.ws();
    c.object(|c, key| {
        if key == "_aws" {
            // A repeated `_aws`: the last one wins.
            c.aws(root.aws.insert(AwsField::NotObject))?;
        } else {
            let raw = c.skip_value()?;
            root.members.push((key, raw));
        }
        Ok(())
    })?;
    c.ws();
    if c.pos != c.bytes.len() {
        return Err(NotJson);
    }
    Ok(())
}

struct Cursor<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        // Every whitespace byte is at most b' ': one comparison settles the usual case.
        while let Some(&b) = self.bytes.get(self.pos) {
            if b > b' ' || !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return;
            }
            self.pos += 1;
        }
    }

    #[inline(always)]
    fn eat(&mut self, b: u8) -> Result<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(NotJson)
        }
    }

    #[inline(always)]
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(NotJson);
        }
        Ok(())
    }

    /// An object at the cursor; `member` is called at each value with its key and must
    /// consume the value. Whitespace before the object must already be skipped.
    #[inline(always)]
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>,
    ) -> Result<()> {
        self.eat(b'{')?;
        self.enter()?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(NotJson),
            }
        }
    }

    /// An array at the cursor; `element` is called at each element and must consume it.
    #[inline(always)]
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.eat(b'[')?;
        self.enter()?;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            element(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(NotJson),
            }
        }
    }

    /// The span of a string literal at the cursor (quotes included) and whether it holds
    /// escapes. Control characters are refused, as JSON requires.
    #[inline(always)]
    fn string_span(&mut self) -> Result<(usize, bool)> {
        let start = self.pos;
        self.eat(b'"')?;
        let mut escaped = false;
        let bytes = self.bytes;
        let mut i = self.pos;
        loop {
            i = skip_plain(bytes, i);
            match bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok((start, escaped));
                }
                // A backslash: skip it and the escaped byte; serde_json checks the escape later.
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                // `skip_plain` stops only at a quote, a backslash, a control character or the
                // end.
                _ => return Err(NotJson),
            }
        }
    }

    /// A string at the cursor, borrowed unless it holds escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>> {
        let (start, escaped) = self.string_span()?;
        if escaped {
            let lit = self.src.get(start..self.pos).ok_or(NotJson)?;
            serde_json::from_str::<String>(lit)
                .map(Cow::Owned)
                .map_err(|_| NotJson)
        } else {
            // Inside the quotes: both cuts sit next to an ASCII quote.
            self.src
                .get(start + 1..self.pos - 1)
                .map(Cow::Borrowed)
                .ok_or(NotJson)
        }
    }

    /// A number at the cursor, checked against the JSON grammar; its text.
    #[inline(always)]
    fn number_text(&mut self) -> Result<&'a str> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(NotJson),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        self.src.get(start..self.pos).ok_or(NotJson)
    }

    #[inline(always)]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    #[inline(always)]
    fn some_digits(&mut self) -> Result<()> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            Err(NotJson)
        } else {
            Ok(())
        }
    }

    /// A number at the cursor as serde_json would give it: an exact integer when it is one
    /// and fits, else an f64; out of f64 range is an error, as in serde_json.
    fn number(&mut self) -> Result<Num> {
        // The usual form, 1 to 19 digits with no leading zero, sign, fraction or exponent (a
        // timestamp), is read in the same pass; anything else goes the general way.
        let start = self.pos;
        let mut n = 0u64;
        while let Some(&d) = self.bytes.get(self.pos) {
            if !d.is_ascii_digit() {
                break;
            }
            n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.pos += 1;
        }
        let digits = self.pos - start;
        let plain = (1..=19).contains(&digits)
            && (digits == 1 || self.bytes.get(start) != Some(&b'0'))
            && !matches!(self.peek(), Some(b'.' | b'e' | b'E'));
        if plain {
            // At most 19 digits: below 10^19 < 2^64, so the wrapping steps never wrapped.
            return Ok(Num::U(n));
        }
        self.pos = start;
        let text = self.number_text()?;
        if let Some(u) = small_uint(text) {
            return Ok(Num::U(u));
        }
        let integral = !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
        if integral {
            if let Ok(u) = text.parse::<u64>() {
                return Ok(Num::U(u));
            }
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Num::I(i));
            }
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Num::F(f)),
            _ => Err(NotJson),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(())
        } else {
            Err(NotJson)
        }
    }

    /// Check and pass over any value; its raw text.
    fn skip_value(&mut self) -> Result<&'a str> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                let (s, escaped) = self.string_span()?;
                if escaped {
                    // Let serde_json judge the escapes (a lone surrogate is refused), exactly as
                    // it does when it reads the line into a `Value`.
                    let lit = self.src.get(s..self.pos).ok_or(NotJson)?;
                    serde_json::from_str::<String>(lit).map_err(|_| NotJson)?;
                }
            }
            Some(b'{') => self.object(|c, _| c.skip_value().map(|_| ()))?,
            Some(b'[') => self.array(|c| c.skip_value().map(|_| ()))?,
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'n') => self.literal(b"null")?,
            _ => {
                self.number_text()?;
            }
        }
        self.src.get(start..self.pos).ok_or(NotJson)
    }

    /// A value read as a string field: a string, or `Wrong` (consumed).
    #[inline(always)]
    fn str_field(&mut self) -> Result<Field<Cow<'a, str>>> {
        if self.peek() == Some(b'"') {
            return self.string().map(Field::Ok);
        }
        self.skip_value().map(|_| Field::Wrong)
    }

    /// A value read as a number field.
    #[inline(always)]
    fn num_field(&mut self) -> Result<Field<Num>> {
        if let Some(b'-' | b'0'..=b'9') = self.peek() {
            return self.number().map(Field::Ok);
        }
        self.skip_value().map(|_| Field::Wrong)
    }

    /// `_aws` into `slot`.
    fn aws(&mut self, slot: &mut AwsField<'a>) -> Result<()> {
        if self.peek() != Some(b'{') {
            *slot = AwsField::NotObject;
            return self.skip_value().map(|_| ());
        }
        *slot = AwsField::Object(Aws::default());
        let AwsField::Object(aws) = slot else {
            return Err(NotJson);
        };
        // A repeated key: the last one wins.
        self.object(|c, key| {
            match &*key {
                "Timestamp" => aws.timestamp = c.num_field()?,
                "CloudWatchMetrics" => c.directives(&mut aws.directives)?,
                _ => {
                    c.skip_value()?;
                }
            }
            Ok(())
        })
    }

    fn directives(&mut self, field: &mut Field<Directives<'a>>) -> Result<()> {
        if self.peek() != Some(b'[') {
            *field = Field::Wrong;
            return self.skip_value().map(|_| ());
        }
        *field = Field::Ok(Directives::default());
        let Field::Ok(list) = field else {
            return Err(NotJson);
        };
        self.array(|c| c.directive(list.push_default()))
    }

    fn directive(&mut self, slot: &mut Directive<'a>) -> Result<()> {
        if self.peek() != Some(b'{') {
            *slot = Directive::NotObject;
            return self.skip_value().map(|_| ());
        }
        *slot = Directive::Object(DirectiveBody::default());
        let Directive::Object(d) = slot else {
            return Err(NotJson);
        };
        self.object(|c, key| {
            match &*key {
                "Namespace" => d.namespace = c.str_field()?,
                "Dimensions" => d.dimensions = c.dimension_sets()?,
                "Metrics" => c.definitions(&mut d.metrics)?,
                _ => {
                    c.skip_value()?;
                }
            }
            Ok(())
        })
    }

    fn dimension_sets(&mut self) -> Result<Field<DimensionSets<'a>>> {
        if self.peek() != Some(b'[') {
            return self.skip_value().map(|_| Field::Wrong);
        }
        let mut sets = DimensionSets::default();
        let mut ok = true;
        self.array(|c| {
            if c.peek() != Some(b'[') {
                ok = false;
                return c.skip_value().map(|_| ());
            }
            let start = sets.keys.len();
            c.array(|c| {
                match c.str_field()? {
                    Field::Ok(k) => sets.keys.push(k),
                    _ => ok = false,
                }
                Ok(())
            })?;
            sets.close_set(start);
            Ok(())
        })?;
        Ok(if ok { Field::Ok(sets) } else { Field::Wrong })
    }

    fn definitions(&mut self, field: &mut Field<Definitions<'a>>) -> Result<()> {
        if self.peek() != Some(b'[') {
            *field = Field::Wrong;
            return self.skip_value().map(|_| ());
        }
        *field = Field::Ok(Definitions::default());
        let Field::Ok(list) = field else {
            return Err(NotJson);
        };
        let mut ok = true;
        self.array(|c| {
            if c.peek() != Some(b'{') {
                ok = false;
                return c.skip_value().map(|_| ());
            }
            let mut m = Definition::default();
            c.object(|c, key| {
                match &*key {
                    "Name" => m.name = c.str_field()?,
                    "Unit" => m.unit = c.str_field()?,
                    "StorageResolution" => m.resolution = c.num_field()?,
                    _ => {
                        c.skip_value()?;
                    }
                }
                Ok(())
            })?;
            if ok {
                list.push(m);
            }
            Ok(())
        })?;
        if !ok {
            *field = Field::Wrong;
        }
        Ok(())
    }
}

/// A number written as 1 to 19 decimal digits and nothing else (e.g. a timestamp in ms), read
/// directly: 19 digits stay below 10^19 < 2^64, so nothing can overflow.
#[inline(always)]
pub(crate) fn small_uint(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Bytes that end a run of plain string text: `"`, `\\` and the control characters.
static STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The position of the first byte at or after `i` that is `"`, `\\` or a control character
/// (or `bytes.len()`): eight bytes at a time by a word-wide test (the lowest flagged byte is
/// exact), then byte by byte.
#[inline(always)]
pub(crate) fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let x = u64::from_le_bytes(*word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        let special = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let special = special & HIGH;
        if special != 0 {
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if STOPS[usize::from(b)] {
            return i;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Result<TextRoot<'_>> {
        let mut r = TextRoot::default();
        super::root(text, &mut r).map(|()| r)
    }

    /// The scanner accepts exactly the objects serde_json accepts.
    fn agrees(text: &str) {
        let serde_ok = matches!(
            serde_json::from_str::<serde_json::Value>(text),
            Ok(serde_json::Value::Object(_))
        );
        assert_eq!(root(text).is_ok(), serde_ok, "{text:?}");
    }

    #[test]
    fn skip_plain_stops_at_the_first_special_byte() {
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| matches!(b[j], b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(b.len())
        };
        // Every special byte, at every position of a 20-byte run, from every start.
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..20 {
                let mut b: Vec<u8> = "a\u{e9}cdefghijklmnopqrs".bytes().collect();
                b.truncate(20);
                b[at] = special;
                for i in 0..=b.len() {
                    assert_eq!(skip_plain(&b, i), naive(&b, i), "{b:?} from {i}");
                }
            }
        }
        // Bytes of multi-byte characters are plain text.
        assert_eq!(
            skip_plain("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}x\"".as_bytes(), 0),
            11
        );
    }

    #[test]
    fn grammar() {
        for t in [
            "{}",
            " {} ",
            "{\"a\":1}",
            "{\"a\":-0.5e+3,\"b\":[true,false,null,{}],\"c\":\"x\\n\\u00e9\"}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":+1}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":NaN}",
            "{\"a\":Infinity}",
            "{\"a\":tru}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":1,}",
            "{\"a\":[1,]}",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":1}x",
            "{\"a\":1}{}",
            "{\"a\":[1 2]}",
            "{\"_aws\":{\"Timestamp\":1e400}}",
            "[]",
            "\"s\"",
            "",
            "{",
            "{\"a\":\"",
            "{\"a\":\"\\",
        ] {
            agrees(t);
        }
    }

    #[test]
    fn small_integers_read_directly() {
        for t in ["0", "7", "1795497900000", "9999999999999999999", "0012"] {
            assert_eq!(small_uint(t), t.parse::<u64>().ok(), "{t}");
        }
        for t in ["", "-1", "1.5", "1e3", "10000000000000000000", "12a"] {
            assert_eq!(small_uint(t), None, "{t}");
        }
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for t in [
            "0",
            "7",
            "1795497900000",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "-5",
            "1.5",
            "1e3",
            "12E-1",
            "00",
            "01",
            "1.",
            "5x",
        ] {
            let line = format!("{{\"_aws\":{{\"Timestamp\":{t}}}}}");
            let want = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => {
                    let n = &v["_aws"]["Timestamp"];
                    Some(match (n.as_u64(), n.as_i64(), n.as_f64()) {
                        (Some(u), _, _) => Num::U(u),
                        (None, Some(i), _) => Num::I(i),
                        (None, None, Some(f)) => Num::F(f),
                        _ => panic!("{t}: not a number"),
                    })
                }
                Err(_) => None,
            };
            let got = match root(&line) {
                Ok(TextRoot {
                    aws: Some(AwsField::Object(aws)),
                    ..
                }) => match aws.timestamp {
                    Field::Ok(n) => Some(n),
                    other => panic!("{t}: {other:?}"),
                },
                Ok(_) => panic!("{t}: no _aws"),
                Err(_) => None,
            };
            assert_eq!(got, want, "{t}");
        }
        // The one known difference: `-0` is the integer 0 here and -0.0 in serde_json; as a
        // timestamp both are 0 ms, and neither is a valid storage resolution.
        let r = root("{\"_aws\":{\"Timestamp\":-0}}");
        assert!(
            matches!(&r, Ok(TextRoot { aws: Some(AwsField::Object(a)), .. }) if a.timestamp == Field::Ok(Num::I(0))),
            "{:?}",
            r.map(|r| r.aws)
        );
    }

    #[test]
    fn out_of_range_numbers() {
        // A root member is only checked for syntax (its number is judged where it is used:
        // a metric value out of range is `metric_value_not_numeric`)...
        assert!(root("{\"a\":1e400}").is_ok());
        assert!(root("{\"_aws\":1e400}").is_ok());
        assert!(serde_json::from_str::<serde_json::Value>("{\"a\":1e400}").is_err());
        // ...while a number read inside `_aws` must fit, as in serde_json.
        assert!(root("{\"_aws\":{\"Timestamp\":1e400}}").is_err());
    }

    #[test]
    fn nesting_limit_matches_serde_json() {
        for depth in [125, 126, 127, 128, 200] {
            let t = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
            agrees(&t);
            let t = format!(
                "{{\"_aws\":{{\"x\":{}1{}}}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            agrees(&t);
        }
    }

    #[test]
    fn members_and_aws() {
        let r = root(r#"{"a":1,"_aws":{"Timestamp":5},"b":[1, 2],"a\u0062":"x"}"#)
            .unwrap_or_else(|_| panic!("root"));
        let keys: Vec<&str> = r.members.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["a", "b", "ab"]);
        let raws: Vec<&str> = r.members.iter().map(|(_, v)| *v).collect();
        assert_eq!(raws, ["1", "[1, 2]", "\"x\""]);
        let Some(AwsField::Object(aws)) = r.aws else {
            panic!("aws")
        };
        assert_eq!(aws.timestamp, Field::Ok(Num::U(5)));
    }
}
