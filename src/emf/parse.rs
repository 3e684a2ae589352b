//! The staged parse of one record (first slice: fast filter and JSON syntax only).

use super::{ParseOptions, Reason, Record, Verdict};

/// Parse one `function` record.
pub fn parse<'a>(record: Record<'a>, _opts: &ParseOptions) -> Verdict<'a> {
    match record {
        Record::Text(line) => {
            let b = line.as_bytes();
            if memchr::memmem::find(b, b"_aws").is_none()
                && memchr::memmem::find(b, b"CloudWatchMetrics").is_none()
            {
                return Verdict::Log;
            }
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(_) => Verdict::Log,
                Err(_) => Verdict::Rejected(vec![Reason::JsonParseError]),
            }
        }
        Record::Json(_) => Verdict::Log,
    }
}

/// Parse raw bytes; invalid UTF-8 is decoded lossily first.
pub fn parse_bytes<'a>(bytes: &'a [u8], opts: &ParseOptions) -> Verdict<'a> {
    match std::str::from_utf8(bytes) {
        Ok(s) => parse(Record::Text(s), opts),
        Err(_) => Verdict::Rejected(vec![Reason::JsonParseError]),
    }
}
