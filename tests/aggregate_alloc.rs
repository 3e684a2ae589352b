//! Adding a data point to an existing series allocates nothing, in its first interval or after a
//! drain kept it: the series is found from the borrowed parts of the point, and its buckets keep
//! their allocation across the drain. A counting allocator checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use loupe::aggregate::Aggregator;
use loupe::emf::{DataPoint, Samples, Unit};

struct Counting;

thread_local! {
    /// Whether this thread counts, and its count: per thread, so tests running in parallel
    /// never add to each other's count.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

fn point<'a>(name: &'a str, service: &'a str, samples: Samples) -> DataPoint<'a> {
    DataPoint {
        namespace: Cow::Borrowed("MyApp"),
        name: Cow::Borrowed(name),
        unit: Unit::Milliseconds,
        storage_resolution: 60,
        dimensions: vec![
            (Cow::Borrowed("Operation"), Cow::Borrowed("put")),
            (Cow::Borrowed("Service"), Cow::Borrowed(service)),
        ],
        samples,
    }
}

/// 200 latency points alternating between two services, the i-th worth `value(i)`.
fn latencies(value: impl Fn(usize) -> f64) -> Vec<DataPoint<'static>> {
    (0..200)
        .map(|i| {
            let service = if i % 2 == 0 { "api" } else { "web" };
            point("Latency", service, Samples::Values(vec![value(i)]))
        })
        .collect()
}

#[test]
fn existing_series_take_points_without_allocating() {
    let mut agg = Aggregator::new(100);
    let points = latencies(|i| 1.0 + i as f64 % 7.0);
    // Create both series and let their buckets reach the range the values cover.
    for p in &points {
        assert!(agg.add_point(p));
    }
    let n = allocations_in(|| {
        for p in &points {
            assert!(agg.add_point(p));
        }
    });
    assert_eq!(n, 0, "adding to existing series allocated {n} times");
    assert_eq!(agg.len(), 2);

    // A new series does allocate (the counter works).
    let fresh = point("Other", "api", Samples::Values(vec![1.0]));
    let n = allocations_in(|| assert!(agg.add_point(&fresh)));
    assert!(n > 0);
}

#[test]
fn series_kept_across_a_drain_take_points_without_allocating() {
    let mut agg = Aggregator::new(100);
    let points = latencies(|i| 1.0 + (i * 37 % 101) as f64);
    for p in &points {
        assert!(agg.add_point(p));
    }
    let first = agg.drain();
    assert_eq!(first.len(), 2);
    // The next interval adds the same values to the kept series: no allocation at all, though
    // the bucket ranges start empty again (the drain kept their allocations).
    let n = allocations_in(|| {
        for p in &points {
            assert!(agg.add_point(p));
        }
    });
    assert_eq!(n, 0, "adding after a drain allocated {n} times");
    assert_eq!(agg.drain(), first, "the same values give the same deltas");
}
