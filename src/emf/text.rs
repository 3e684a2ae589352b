//! Text-level steps before any JSON work: the cheap "could this be EMF?" filter, the trailing
//! newline, and the Lambda runtimes' log prefixes.
//!
//! In: one line as text. Out: yes/no answers and sub-slices of the same line; no allocation.

use std::sync::LazyLock;

use memchr::memmem::Finder;

static AWS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"_aws"));
static CWM: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"CloudWatchMetrics"));
static QUOTED_AWS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"_aws\""));
static ESCAPED_AWS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\\"_aws\\\""));

/// Could this line hold EMF at all? `false` means a plain log line (the hot path).
#[inline]
pub(crate) fn may_be_emf(line: &[u8]) -> bool {
    AWS.find(line).is_some() || CWM.find(line).is_some()
}

/// Does the text mention the `_aws` key (quoted, or quoted inside a JSON string)?
pub(crate) fn mentions_aws_key(text: &[u8]) -> bool {
    QUOTED_AWS.find(text).is_some() || ESCAPED_AWS.find(text).is_some()
}

/// The line without one trailing `\n` or `\r\n`.
pub(crate) fn strip_newline(line: &str) -> &str {
    line.strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(line)
}

/// JSON insignificant whitespace.
pub(crate) fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The line after one Lambda runtime prefix anchored at its start, if there is one:
/// Node/.NET `2026-11-24T05:21:04.582Z\t<requestId>\tINFO\t` or
/// Python `[INFO]\t2026-11-24T05:21:04.582Z\t<requestId>\t`.
pub(crate) fn strip_lambda_prefix(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let rest = if b.first() == Some(&b'[') {
        strip_python(b)?
    } else {
        strip_node(b)?
    };
    // The prefix is ASCII and ends with a TAB, so the cut is on a char boundary.
    line.get(b.len() - rest.len()..)
}

/// `<ISO ms Z>\t<requestId>\t<LEVEL>\t`
fn strip_node(b: &[u8]) -> Option<&[u8]> {
    let rest = iso_timestamp(b)?;
    let rest = rest.strip_prefix(b"\t")?;
    let rest = skip_field(rest)?;
    let tab = memchr::memchr(b'\t', rest)?;
    let (level, rest) = rest.split_at(tab);
    matches!(
        level,
        b"TRACE" | b"DEBUG" | b"INFO" | b"WARN" | b"ERROR" | b"FATAL"
    )
    .then_some(rest.get(1..)?)
}

/// `[LEVEL]\t<ISO ms Z>\t<requestId>\t`
fn strip_python(b: &[u8]) -> Option<&[u8]> {
    let rest = b.strip_prefix(b"[")?;
    let close = memchr::memchr(b']', rest)?;
    let (level, rest) = rest.split_at(close);
    if !matches!(
        level,
        b"DEBUG" | b"INFO" | b"WARNING" | b"ERROR" | b"CRITICAL"
    ) {
        return None;
    }
    let rest = rest.strip_prefix(b"]\t")?;
    let rest = iso_timestamp(rest)?;
    let rest = rest.strip_prefix(b"\t")?;
    skip_field(rest)
}

/// Skip a field up to and including its closing TAB.
fn skip_field(b: &[u8]) -> Option<&[u8]> {
    let tab = memchr::memchr(b'\t', b)?;
    b.get(tab + 1..)
}

/// Skip `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn iso_timestamp(b: &[u8]) -> Option<&[u8]> {
    const SHAPE: &[u8; 24] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let ts = b.get(..SHAPE.len())?;
    let ok = ts.iter().zip(SHAPE).all(|(&c, &s)| match s {
        b'd' => c.is_ascii_digit(),
        _ => c == s,
    });
    ok.then(|| &b[SHAPE.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_prefix() {
        let l = "2026-11-24T05:21:04.582Z\t3f1c-ab\tINFO\t{\"a\":1}";
        assert_eq!(strip_lambda_prefix(l), Some("{\"a\":1}"));
        let l = "2026-11-24T05:21:04.582Z\tundefined\tERROR\t{";
        assert_eq!(strip_lambda_prefix(l), Some("{"));
        let l = "2026-11-24T05:21:04.582Z\t\tNOTICE\t{";
        assert_eq!(strip_lambda_prefix(l), None);
        let l = "2026-11-24 05:21:04.582Z\tid\tINFO\t{";
        assert_eq!(strip_lambda_prefix(l), None);
    }

    #[test]
    fn python_prefix() {
        let l = "[INFO]\t2026-11-24T05:21:04.996Z\treq\t{}";
        assert_eq!(strip_lambda_prefix(l), Some("{}"));
        let l = "[WARNING]\t2026-11-24T05:21:04.996Z\t\t{}";
        assert_eq!(strip_lambda_prefix(l), Some("{}"));
        assert_eq!(
            strip_lambda_prefix("[WARN]\t2026-11-24T05:21:04.996Z\tr\t{}"),
            None
        );
        assert_eq!(
            strip_lambda_prefix("[INFO]\t2026-11-24T05:21:04Z\tr\t{}"),
            None
        );
        assert_eq!(strip_lambda_prefix("[INFO"), None);
    }

    #[test]
    fn newline() {
        assert_eq!(strip_newline("a\r\n"), "a");
        assert_eq!(strip_newline("a\n\n"), "a\n");
        assert_eq!(strip_newline("a\r"), "a\r");
        assert_eq!(strip_newline(""), "");
    }

    #[test]
    fn filter() {
        assert!(may_be_emf(b"{\"_aws\":{}}"));
        assert!(may_be_emf(b"{\"CloudWatchMetrics\":[]}"));
        assert!(!may_be_emf(b"START RequestId: 1 Version: $LATEST"));
        assert!(mentions_aws_key(b"x {\\\"_aws\\\": 1}"));
        assert!(!mentions_aws_key(b"the _aws key"));
    }
}
