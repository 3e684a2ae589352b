//! When to try again: the OTLP/HTTP retry rules, backoff with jitter, `Retry-After`, and a circuit
//! breaker. Pure state and arithmetic; the sender feeds it status codes and the time.
//!
//! Rules (OTLP specification, "OTLP/HTTP Response"): 429, 502, 503, 504 and transport errors are
//! retryable; any other 4xx/5xx is not (the batch is dropped and counted); a 2xx is a success even
//! when its body reports a partial success (the rejected part is counted, never resent).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to do with a batch after one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered (2xx).
    Delivered,
    /// Worth another attempt, not before `after` when the backend said so.
    Retry { after: Option<Duration> },
    /// Refused for good: drop and count under this status.
    Drop { status: u16 },
}

/// Classifies an HTTP answer. `retry_after` is the raw `Retry-After` header, if any.
pub fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 502 | 503 | 504 => Verdict::Retry {
            after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        _ => Verdict::Drop { status },
    }
}

/// The longest `Retry-After` loupe honours; a longer one is capped (the breaker takes over).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` as delta-seconds or an IMF-fixdate HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = parse_http_date(v)?;
    let now_s = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now_s)).min(MAX_RETRY_AFTER))
}

/// Seconds since the epoch of an IMF-fixdate (RFC 9110 5.6.7), the only form senders must use.
fn parse_http_date(v: &str) -> Option<u64> {
    let mut parts = v.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let (h, m, s): (u64, u64, u64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    let days = crate::clock::days_from_civil(year as i64, month, day as u32);
    Some(days as u64 * 86_400 + h * 3600 + m * 60 + s)
}

/// Exponential backoff with full jitter: attempt n waits a uniform time in [0, min(max, base·2^n)].
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            max,
            rng: seed | 1,
        }
    }

    /// The wait before retry number `attempt` (0 for the first retry).
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
            .min(self.max);
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let nanos = cap.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 {
            0
        } else {
            self.rng % (nanos + 1)
        })
    }
}

/// Stops sending after `threshold` failures in a row, for a cool-down, then lets one attempt
/// through (half-open): a success closes it, a failure opens it again for a longer cool-down.
#[derive(Clone, Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    max_cooldown: Duration,
    failures: u32,
    open_until: Option<SystemTime>,
    trips: u32,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration, max_cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            max_cooldown,
            failures: 0,
            open_until: None,
            trips: 0,
        }
    }

    /// May a request go out now?
    pub fn allows(&self, now: SystemTime) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    pub fn is_open(&self, now: SystemTime) -> bool {
        !self.allows(now)
    }

    /// The cool-down passed but no attempt succeeded since: one request may test the backend.
    pub fn half_open(&self, now: SystemTime) -> bool {
        self.open_until.is_some_and(|until| now >= until)
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.trips = 0;
    }

    /// Records a failed attempt; returns true when this failure opened the breaker.
    pub fn on_failure(&mut self, now: SystemTime) -> bool {
        self.failures = self.failures.saturating_add(1);
        let half_open_failed = self.open_until.is_some();
        if self.failures >= self.threshold || half_open_failed {
            let factor = 1u32.checked_shl(self.trips.min(16)).unwrap_or(u32::MAX);
            let wait = self.cooldown.saturating_mul(factor).min(self.max_cooldown);
            self.open_until = Some(now + wait);
            self.trips = self.trips.saturating_add(1);
            self.failures = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn otlp_status_rules() {
        let now = at(0);
        assert_eq!(classify(200, None, now), Verdict::Delivered);
        assert_eq!(classify(204, None, now), Verdict::Delivered);
        for s in [429, 502, 503, 504] {
            assert_eq!(classify(s, None, now), Verdict::Retry { after: None });
        }
        for s in [400, 401, 403, 404, 413, 500, 501] {
            assert_eq!(classify(s, None, now), Verdict::Drop { status: s });
        }
        assert_eq!(
            classify(429, Some("7"), now),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_forms() {
        // 1445412480 = Wed, 21 Oct 2015 07:28:00 GMT
        let now = at(1_445_412_480 - 30);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", at(1_445_412_480 + 5)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["", "-1", "soon", "Wed, 32 Oct 2015 07:28:00 GMT", "1.5"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn backoff_is_jittered_within_an_exponential_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 42);
        for attempt in 0..40 {
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(30))
                .min(Duration::from_secs(5));
            let d = b.delay(attempt);
            assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
        }
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| b.delay(10)).collect();
        assert!(spread.len() > 10, "jitter should spread delays");
    }

    #[test]
    fn breaker_opens_after_threshold_and_half_opens_after_cooldown() {
        let mut br = Breaker::new(3, Duration::from_secs(10), Duration::from_secs(60));
        let t0 = at(1000);
        assert!(br.allows(t0));
        assert!(!br.on_failure(t0));
        assert!(!br.on_failure(t0));
        assert!(br.on_failure(t0));
        assert!(!br.allows(t0 + Duration::from_secs(9)));
        assert!(br.allows(t0 + Duration::from_secs(10)));
        assert!(!br.half_open(t0 + Duration::from_secs(9)));
        assert!(br.half_open(t0 + Duration::from_secs(10)));
        // The half-open attempt fails: open again, for twice as long.
        let t1 = t0 + Duration::from_secs(10);
        assert!(br.on_failure(t1));
        assert!(!br.allows(t1 + Duration::from_secs(19)));
        assert!(br.allows(t1 + Duration::from_secs(20)));
        br.on_success();
        assert!(br.allows(t1));
        assert!(!br.half_open(t1 + Duration::from_secs(100)));
        assert!(!br.on_failure(t1));
    }
}
