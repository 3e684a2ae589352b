//! A batch: everything gathered since the last flush, handed from the pipeline to export.
//!
//! In: the pipeline's aggregated series, its events, and counters from every stage. Out: the flush
//! control encodes and sends it. [`Source`] is the seam between the two: the pipeline implements
//! it, the flush control calls it.

use std::future::Future;

use tokio::time::Instant;

use crate::aggregate::Series;
use crate::event::Event;
use crate::invocation::Drained;
use crate::trace::Span;

/// What one flush sends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Every series recorded since the last drain (delta), EMF and platform metrics alike.
    pub series: Vec<Series>,
    /// Log lines, EMF events and invocation errors, oldest first.
    pub events: Vec<Event>,
    /// Counters for loupe's own metrics (`loupe.*`), as deltas since the last drain.
    pub counters: Vec<Counter>,
    /// One span per completed invocation.
    pub spans: Vec<Span>,
}

/// One of loupe's own counters: a delta, shipped as a monotonic sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// `loupe.` name, e.g. `loupe.emf.rejected`.
    pub name: &'static str,
    /// Low-cardinality attributes only (a reason code, a signal name).
    pub attributes: Vec<(&'static str, String)>,
    pub value: u64,
}

impl Counter {
    pub fn new(name: &'static str, value: u64) -> Counter {
        Counter {
            name,
            attributes: Vec::new(),
            value,
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Counter {
        self.attributes.push((key, value.into()));
        self
    }

    /// Adds a counter to `out` if it counted anything; nothing is allocated for a zero. Out of
    /// line: the flush paths call it once per counter name, with the attributes as a slice.
    #[inline(never)]
    pub fn push_nonzero(
        out: &mut Vec<Counter>,
        name: &'static str,
        value: u64,
        attributes: &[(&'static str, &str)],
    ) {
        if value > 0 {
            out.push(Counter {
                name,
                attributes: attributes
                    .iter()
                    .map(|&(k, v)| (k, v.to_string()))
                    .collect(),
                value,
            });
        }
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
            && self.events.is_empty()
            && self.spans.is_empty()
            && self.counters.iter().all(|c| c.value == 0)
    }
}

/// Where batches come from.
pub trait Source {
    /// Everything gathered since the last call, with the platform metrics and error events of
    /// `invocations` (completed invocations and init/restore phases from the tracker) folded in.
    /// Returns by `deadline` with whatever it has.
    fn drain(&mut self, invocations: Drained, deadline: Instant) -> impl Future<Output = Batch>;
}
