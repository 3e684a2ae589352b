//! Export: what leaves the sandbox. Encodes metric snapshots and events as OTLP/HTTP protobuf (or
//! gzip NDJSON), compresses, and sends them with retries and a circuit breaker.
//!
//! In: aggregated series and events, plus a time budget per flush. Out: HTTP requests to the
//! configured backend, and counters of what was sent, retried and dropped. Knows nothing of the
//! Lambda lifecycle: the flush control decides when, this module decides how.

pub mod encode;
pub mod gzip;
pub mod http;
pub mod metrics;
pub mod ndjson;
pub mod otlp;
pub mod proto;
pub mod retry;
pub mod ship;
pub mod traces;
