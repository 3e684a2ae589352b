//! Metric encoding: aggregated series and loupe's own counters as OTLP metrics.
//!
//! In: [`Series`] (exponential histograms) and [`Counter`]s, each with the time window it covers.
//! Out: [`Point`]s, the protocol-neutral form both encoders (protobuf here, NDJSON in `ndjson`)
//! read, and OTLP `Metric`s. [`Cumulative`] turns delta points into running totals for
//! `LOUPE_TEMPORALITY=cumulative`, bounded by the series cap. Pure functions and data; no I/O.

use hashbrown::HashMap;

use super::otlp::{kv, scope};
use super::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use super::proto::common::v1::KeyValue;
use super::proto::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exponential_histogram_data_point, metric,
    number_data_point,
};
use super::proto::resource::v1::Resource;
use crate::aggregate::{Histogram, Series, SeriesKey};
use crate::batch::Counter;
use crate::config::Temporality;
use crate::emf::Unit;

/// The attribute that carries a series' EMF namespace.
pub const NAMESPACE_ATTRIBUTE: &str = "aws.emf.namespace";

/// One metric data point, ready to encode in either protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum Point {
    /// An exponential histogram of one series.
    Histogram {
        key: SeriesKey,
        histogram: Histogram,
        start_unix_nano: u64,
        time_unix_nano: u64,
    },
    /// A monotonic sum (loupe's own counters).
    Sum {
        name: String,
        attributes: Vec<(String, String)>,
        value: u64,
        start_unix_nano: u64,
        time_unix_nano: u64,
    },
}

impl Point {
    pub fn histogram(series: Series, start_unix_nano: u64, time_unix_nano: u64) -> Point {
        Point::Histogram {
            key: series.key,
            histogram: series.histogram,
            start_unix_nano,
            time_unix_nano,
        }
    }

    pub fn counter(c: &Counter, start_unix_nano: u64, time_unix_nano: u64) -> Point {
        Point::Sum {
            name: c.name.to_string(),
            attributes: c
                .attributes
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
            value: c.value,
            start_unix_nano,
            time_unix_nano,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Point::Histogram { key, .. } => key.name(),
            Point::Sum { name, .. } => name,
        }
    }

    /// The UCUM unit.
    pub fn unit(&self) -> &'static str {
        match self {
            Point::Histogram { key, .. } => unit(key.unit()),
            Point::Sum { .. } => "1",
        }
    }

    /// The attributes as string pairs: a series' dimensions plus its namespace when non-empty.
    pub fn attributes(&self) -> Vec<(&str, &str)> {
        match self {
            Point::Histogram { key, .. } => {
                let mut out: Vec<(&str, &str)> = key
                    .dimensions()
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if !key.namespace().is_empty() {
                    out.push((NAMESPACE_ATTRIBUTE, key.namespace()));
                }
                out
            }
            Point::Sum { attributes, .. } => attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }

    pub fn window(&self) -> (u64, u64) {
        match self {
            Point::Histogram {
                start_unix_nano,
                time_unix_nano,
                ..
            }
            | Point::Sum {
                start_unix_nano,
                time_unix_nano,
                ..
            } => (*start_unix_nano, *time_unix_nano),
        }
    }
}

/// The UCUM-style unit of a CloudWatch unit (`None` has no unit: the empty string).
pub fn unit(u: Unit) -> &'static str {
    match u {
        Unit::Seconds => "s",
        Unit::Microseconds => "us",
        Unit::Milliseconds => "ms",
        Unit::Bytes => "By",
        Unit::Kilobytes => "kBy",
        Unit::Megabytes => "MBy",
        Unit::Gigabytes => "GBy",
        Unit::Terabytes => "TBy",
        Unit::Bits => "bit",
        Unit::Kilobits => "kbit",
        Unit::Megabits => "Mbit",
        Unit::Gigabits => "Gbit",
        Unit::Terabits => "Tbit",
        Unit::Percent => "%",
        Unit::Count => "1",
        Unit::BytesPerSecond => "By/s",
        Unit::KilobytesPerSecond => "kBy/s",
        Unit::MegabytesPerSecond => "MBy/s",
        Unit::GigabytesPerSecond => "GBy/s",
        Unit::TerabytesPerSecond => "TBy/s",
        Unit::BitsPerSecond => "bit/s",
        Unit::KilobitsPerSecond => "kbit/s",
        Unit::MegabitsPerSecond => "Mbit/s",
        Unit::GigabitsPerSecond => "Gbit/s",
        Unit::TerabitsPerSecond => "Tbit/s",
        Unit::CountPerSecond => "1/s",
        Unit::None => "",
    }
}

pub fn temporality_code(t: Temporality) -> i32 {
    match t {
        Temporality::Delta => AggregationTemporality::Delta as i32,
        Temporality::Cumulative => AggregationTemporality::Cumulative as i32,
    }
}

/// One OTLP metric holding one data point.
pub fn metric(p: &Point, temporality: Temporality) -> Metric {
    let attributes: Vec<KeyValue> = p.attributes().into_iter().map(|(k, v)| kv(k, v)).collect();
    let (start_time_unix_nano, time_unix_nano) = p.window();
    let data = match p {
        Point::Histogram { histogram: h, .. } => {
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count: h.count(),
                    sum: Some(h.sum()),
                    scale: h.scale(),
                    zero_count: h.zero_count(),
                    positive: Some(buckets(h.positive())),
                    negative: Some(buckets(h.negative())),
                    flags: 0,
                    exemplars: Vec::new(),
                    min: h.min(),
                    max: h.max(),
                    zero_threshold: 0.0,
                }],
                aggregation_temporality: temporality_code(temporality),
            })
        }
        Point::Sum { value, .. } => metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                exemplars: Vec::new(),
                flags: 0,
                value: Some(number_data_point::Value::AsInt(
                    i64::try_from(*value).unwrap_or(i64::MAX),
                )),
            }],
            aggregation_temporality: temporality_code(temporality),
            is_monotonic: true,
        }),
    };
    Metric {
        name: p.name().to_string(),
        description: String::new(),
        unit: p.unit().to_string(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

fn buckets(b: &crate::aggregate::Buckets) -> exponential_histogram_data_point::Buckets {
    exponential_histogram_data_point::Buckets {
        offset: b.offset(),
        bucket_counts: b.counts().into_owned(),
    }
}

/// Every point under one resource and scope.
pub fn metrics_request(
    resource: &Resource,
    points: &[Point],
    temporality: Temporality,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: points.iter().map(|p| metric(p, temporality)).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum StreamKey {
    Series(SeriesKey),
    Counter(String, Vec<(String, String)>),
}

#[derive(Clone, Debug)]
enum Total {
    Histogram(Histogram),
    Sum(u64),
}

#[derive(Clone, Debug)]
struct Running {
    start_unix_nano: u64,
    total: Total,
    /// The flush that last updated it, for eviction.
    touched: u64,
}

/// Running totals for cumulative temporality: one entry per stream (series or counter), at most
/// `cap` of them. A new stream beyond the cap evicts the one updated longest ago; an evicted
/// stream that comes back starts over with the start time of its new delta (a reset, as the data
/// model allows). Points are sent for the streams updated in a flush only.
#[derive(Debug)]
pub struct Cumulative {
    cap: usize,
    streams: HashMap<StreamKey, Running>,
    flushes: u64,
    evicted: u64,
}

impl Cumulative {
    pub fn new(cap: usize) -> Cumulative {
        Cumulative {
            cap: cap.max(1),
            streams: HashMap::new(),
            flushes: 0,
            evicted: 0,
        }
    }

    /// Streams dropped from the totals to make room since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Folds one flush's delta points into the totals and returns the cumulative points.
    pub fn accumulate(&mut self, deltas: Vec<Point>) -> Vec<Point> {
        self.flushes += 1;
        let flush = self.flushes;
        let mut out = Vec::with_capacity(deltas.len());
        for p in deltas {
            let (key, start, end) = match &p {
                Point::Histogram {
                    key,
                    start_unix_nano,
                    time_unix_nano,
                    ..
                } => (
                    StreamKey::Series(key.clone()),
                    *start_unix_nano,
                    *time_unix_nano,
                ),
                Point::Sum {
                    name,
                    attributes,
                    start_unix_nano,
                    time_unix_nano,
                    ..
                } => (
                    StreamKey::Counter(name.clone(), attributes.clone()),
                    *start_unix_nano,
                    *time_unix_nano,
                ),
            };
            if !self.streams.contains_key(&key) && self.streams.len() >= self.cap {
                self.evict_oldest();
            }
            let entry = self.streams.entry(key).or_insert_with(|| Running {
                start_unix_nano: start,
                total: match &p {
                    Point::Histogram { .. } => Total::Histogram(Histogram::new()),
                    Point::Sum { .. } => Total::Sum(0),
                },
                touched: flush,
            });
            entry.touched = flush;
            let merged = match (&mut entry.total, p) {
                (Total::Histogram(total), Point::Histogram { key, histogram, .. }) => {
                    if total.merge(&histogram).is_err() {
                        // The totals cannot hold more: restart the stream from this delta.
                        *total = histogram;
                        entry.start_unix_nano = start;
                    }
                    Point::Histogram {
                        key,
                        histogram: total.clone(),
                        start_unix_nano: entry.start_unix_nano,
                        time_unix_nano: end,
                    }
                }
                (
                    Total::Sum(total),
                    Point::Sum {
                        name,
                        attributes,
                        value,
                        ..
                    },
                ) => {
                    *total = total.saturating_add(value);
                    Point::Sum {
                        name,
                        attributes,
                        value: *total,
                        start_unix_nano: entry.start_unix_nano,
                        time_unix_nano: end,
                    }
                }
                // A stream key names its kind, so the kinds always agree; pass it through.
                (_, p) => p,
            };
            out.push(merged);
        }
        out
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .streams
            .iter()
            .min_by_key(|(_, r)| r.touched)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.streams.remove(&k);
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::resource;
    use crate::export::proto::common::v1::any_value;
    use prost::Message;

    fn series(name: &str, values: &[f64]) -> Series {
        let mut h = Histogram::new();
        for v in values {
            h.record(*v).expect("finite");
        }
        Series {
            key: SeriesKey::new(
                "Shop",
                name,
                Unit::Milliseconds,
                60,
                vec![("route".into(), "/buy".into())],
            ),
            histogram: h,
        }
    }

    fn decode(points: &[Point], t: Temporality) -> Vec<Metric> {
        let req = metrics_request(&resource(&Default::default(), None), points, t);
        let back = ExportMetricsServiceRequest::decode(&req.encode_to_vec()[..]).expect("decodes");
        back.resource_metrics[0].scope_metrics[0].metrics.clone()
    }

    #[test]
    fn series_become_exponential_histograms_that_decode_back() {
        let s = series("latency", &[0.0, 1.0, 2.0, 2.0, 100.0, -3.0]);
        let h = s.histogram.clone();
        let metrics = decode(&[Point::histogram(s, 10, 20)], Temporality::Delta);
        assert_eq!(metrics.len(), 1);
        let m = &metrics[0];
        assert_eq!(m.name, "latency");
        assert_eq!(m.unit, "ms");
        let Some(metric::Data::ExponentialHistogram(eh)) = &m.data else {
            panic!("not an exponential histogram: {:?}", m.data);
        };
        assert_eq!(eh.aggregation_temporality, 1);
        let dp = &eh.data_points[0];
        assert_eq!((dp.start_time_unix_nano, dp.time_unix_nano), (10, 20));
        assert_eq!(dp.count, 6);
        assert_eq!(dp.sum, Some(102.0));
        assert_eq!((dp.min, dp.max), (Some(-3.0), Some(100.0)));
        assert_eq!(dp.zero_count, 1);
        assert_eq!(dp.scale, h.scale());
        let pos = dp.positive.as_ref().expect("positive");
        assert_eq!(pos.offset, h.positive().offset());
        assert_eq!(pos.bucket_counts, *h.positive().counts());
        assert_eq!(pos.bucket_counts.iter().sum::<u64>(), 4);
        let neg = dp.negative.as_ref().expect("negative");
        assert_eq!(neg.bucket_counts.iter().sum::<u64>(), 1);
        // Each positive value falls in the bucket its index names: (base^i, base^(i+1)].
        let base = 2f64.powf(2f64.powi(-dp.scale));
        for v in [1.0, 2.0, 100.0] {
            let i = crate::aggregate::bucket_index(v, dp.scale);
            assert!(base.powi(i) < v * (1.0 + 1e-9) && v <= base.powi(i + 1) * (1.0 + 1e-9));
            let slot = usize::try_from(i - pos.offset).expect("index in range");
            assert!(pos.bucket_counts[slot] >= 1, "value {v} bucket {i}");
        }
        let attrs: Vec<(&str, Option<&any_value::Value>)> = dp
            .attributes
            .iter()
            .map(|kv| {
                (
                    kv.key.as_str(),
                    kv.value.as_ref().and_then(|v| v.value.as_ref()),
                )
            })
            .collect();
        assert_eq!(
            attrs,
            vec![
                ("route", Some(&any_value::Value::StringValue("/buy".into()))),
                (
                    NAMESPACE_ATTRIBUTE,
                    Some(&any_value::Value::StringValue("Shop".into()))
                ),
            ]
        );
    }

    #[test]
    fn empty_namespace_adds_no_attribute_and_units_map() {
        let key = SeriesKey::new("", "n", Unit::Bytes, 60, vec![]);
        let p = Point::histogram(
            Series {
                key,
                histogram: Histogram::new(),
            },
            0,
            1,
        );
        assert!(p.attributes().is_empty());
        assert_eq!(p.unit(), "By");
        assert_eq!(unit(Unit::Seconds), "s");
        assert_eq!(unit(Unit::Count), "1");
        assert_eq!(unit(Unit::Percent), "%");
        assert_eq!(unit(Unit::None), "");
        for u in Unit::ALL {
            // Every CloudWatch unit has a mapping that differs from its CloudWatch spelling,
            // except for none.
            assert!(*u == Unit::None || unit(*u) != u.as_str(), "{u:?}");
        }
    }

    #[test]
    fn counters_are_monotonic_sums() {
        let c = Counter::new("loupe.export.retries", 3).with("signal", "metrics");
        let metrics = decode(&[Point::counter(&c, 5, 9)], Temporality::Delta);
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("not a sum");
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 1);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsInt(3))
        );
        assert_eq!(sum.data_points[0].attributes[0].key, "signal");
        assert_eq!(metrics[0].unit, "1");
    }

    #[test]
    fn cumulative_keeps_running_totals_with_a_fixed_start() {
        let mut c = Cumulative::new(10);
        let first = c.accumulate(vec![
            Point::histogram(series("a", &[1.0, 2.0]), 100, 200),
            Point::counter(&Counter::new("loupe.flushes", 1), 100, 200),
        ]);
        let second = c.accumulate(vec![
            Point::histogram(series("a", &[4.0]), 200, 300),
            Point::counter(&Counter::new("loupe.flushes", 2), 200, 300),
        ]);
        assert_eq!(first.len(), 2);
        match &second[0] {
            Point::Histogram {
                histogram,
                start_unix_nano,
                time_unix_nano,
                ..
            } => {
                assert_eq!((*start_unix_nano, *time_unix_nano), (100, 300));
                assert_eq!(histogram.count(), 3);
                assert_eq!(histogram.sum(), 7.0);
                assert_eq!(histogram.min(), Some(1.0));
            }
            other => panic!("{other:?}"),
        }
        match &second[1] {
            Point::Sum {
                value,
                start_unix_nano,
                ..
            } => assert_eq!((*value, *start_unix_nano), (3, 100)),
            other => panic!("{other:?}"),
        }
        let m = decode(&second, Temporality::Cumulative);
        let Some(metric::Data::ExponentialHistogram(eh)) = &m[0].data else {
            panic!("not a histogram");
        };
        assert_eq!(eh.aggregation_temporality, 2);
    }

    #[test]
    fn cumulative_is_bounded_and_evicted_streams_restart() {
        let mut c = Cumulative::new(2);
        c.accumulate(vec![Point::histogram(series("a", &[1.0]), 0, 10)]);
        c.accumulate(vec![Point::histogram(series("b", &[1.0]), 10, 20)]);
        c.accumulate(vec![Point::histogram(series("c", &[1.0]), 20, 30)]);
        assert_eq!(c.len(), 2);
        assert_eq!(c.evicted(), 1);
        // "a" was the oldest: it comes back as a new stream with its new start.
        let back = c.accumulate(vec![Point::histogram(series("a", &[5.0]), 30, 40)]);
        match &back[0] {
            Point::Histogram {
                histogram,
                start_unix_nano,
                ..
            } => {
                assert_eq!(*start_unix_nano, 30);
                assert_eq!(histogram.count(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.evicted(), 2);
    }
}
