//! The series map: one [`Histogram`] per [`SeriesKey`], with a cap on live series and on the
//! bytes their keys hold.
//!
//! In: a key, either owned or borrowed from a parsed [`DataPoint`]. Out: the histogram to add to,
//! or a refusal when a new series would pass a cap. Finding an existing series from a borrowed
//! data point allocates nothing: the table is keyed by a hash of the borrowed parts, compared
//! part by part on a hit.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::histogram::Histogram;
use crate::emf::{DataPoint, Unit};

/// What identifies a series: namespace, metric name, dimensions (sorted by key, unique keys),
/// unit and storage resolution.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    namespace: String,
    name: String,
    dimensions: Vec<(String, String)>,
    unit: Unit,
    storage_resolution: u32,
}

impl SeriesKey {
    /// Sorts the dimensions by key; of two pairs with the same key the later one wins.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        unit: Unit,
        storage_resolution: u32,
        dimensions: Vec<(String, String)>,
    ) -> SeriesKey {
        let mut dimensions = dimensions;
        // Stable sort, then keep the last of each run of equal keys.
        dimensions.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(String, String)> = Vec::with_capacity(dimensions.len());
        for d in dimensions {
            match kept.last_mut() {
                Some(last) if last.0 == d.0 => *last = d,
                _ => kept.push(d),
            }
        }
        SeriesKey {
            namespace: namespace.into(),
            name: name.into(),
            dimensions: kept,
            unit,
            storage_resolution,
        }
    }

    /// The key of a parsed data point (allocates; the aggregator only calls it for a new series).
    pub fn from_point(p: &DataPoint<'_>) -> SeriesKey {
        SeriesKey::new(
            p.namespace.as_ref(),
            p.name.as_ref(),
            p.unit,
            p.storage_resolution,
            p.dimensions
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// (key, value) pairs sorted by key.
    pub fn dimensions(&self) -> &[(String, String)] {
        &self.dimensions
    }

    pub fn unit(&self) -> Unit {
        self.unit
    }

    pub fn storage_resolution(&self) -> u32 {
        self.storage_resolution
    }

    /// Heap bytes the key holds (string contents and the dimension array).
    pub fn heap_bytes(&self) -> usize {
        self.namespace.len()
            + self.name.len()
            + self.dimensions.len() * size_of::<(String, String)>()
            + self
                .dimensions
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    fn parts(&self) -> Parts<'_, (String, String)> {
        Parts {
            namespace: &self.namespace,
            name: &self.name,
            unit: self.unit,
            storage_resolution: self.storage_resolution,
            dimensions: &self.dimensions,
        }
    }
}

/// A series and everything recorded into it since the last drain.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub key: SeriesKey,
    pub histogram: Histogram,
}

/// A dimension pair, owned or borrowed.
pub(crate) trait Dimension {
    fn key(&self) -> &str;
    fn value(&self) -> &str;
}

impl Dimension for (String, String) {
    fn key(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &str {
        &self.1
    }
}

impl Dimension for (Cow<'_, str>, Cow<'_, str>) {
    fn key(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &str {
        &self.1
    }
}

/// A key seen through borrowed parts, so that a data point and a stored key hash alike.
pub(crate) struct Parts<'a, D> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub unit: Unit,
    pub storage_resolution: u32,
    /// Sorted by key, unique keys.
    pub dimensions: &'a [D],
}

impl<'a> Parts<'a, (Cow<'a, str>, Cow<'a, str>)> {
    /// The parts of a data point, when its dimensions are sorted with unique keys as the EMF
    /// contract promises; `None` otherwise.
    #[inline]
    pub fn of_point(p: &'a DataPoint<'a>) -> Option<Self> {
        p.dimensions
            .windows(2)
            .all(|w| w[0].0 < w[1].0)
            .then_some(Parts {
                namespace: &p.namespace,
                name: &p.name,
                unit: p.unit,
                storage_resolution: p.storage_resolution,
                dimensions: &p.dimensions,
            })
    }
}

impl<D: Dimension> Parts<'_, D> {
    #[inline]
    fn hash_with(&self, builder: &DefaultHashBuilder) -> u64 {
        let mut h = builder.build_hasher();
        self.namespace.hash(&mut h);
        self.name.hash(&mut h);
        self.unit.hash(&mut h);
        self.storage_resolution.hash(&mut h);
        h.write_usize(self.dimensions.len());
        for d in self.dimensions {
            d.key().hash(&mut h);
            d.value().hash(&mut h);
        }
        h.finish()
    }

    #[inline]
    fn matches(&self, key: &SeriesKey) -> bool {
        self.namespace == key.namespace
            && self.name == key.name
            && self.unit == key.unit
            && self.storage_resolution == key.storage_resolution
            && self.dimensions.len() == key.dimensions.len()
            && self
                .dimensions
                .iter()
                .zip(&key.dimensions)
                .all(|(d, (k, v))| d.key() == k && d.value() == v)
    }
}

struct Entry {
    hash: u64,
    key: SeriesKey,
    histogram: Histogram,
}

/// Why a new series was not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// `max_series` live series already.
    Series,
    /// The keys of the live series already hold their byte budget.
    KeyBytes,
}

pub(crate) struct SeriesMap {
    table: HashTable<Entry>,
    hasher: DefaultHashBuilder,
    max_series: usize,
    key_bytes: usize,
    max_key_bytes: usize,
}

impl SeriesMap {
    pub fn new(max_series: usize, max_key_bytes: usize) -> SeriesMap {
        SeriesMap {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            max_series,
            key_bytes: 0,
            max_key_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn key_bytes(&self) -> usize {
        self.key_bytes
    }

    pub fn get(&self, key: &SeriesKey) -> Option<&Histogram> {
        let parts = key.parts();
        let hash = parts.hash_with(&self.hasher);
        self.table
            .find(hash, |e| parts.matches(&e.key))
            .map(|e| &e.histogram)
    }

    /// The histogram of `key`, creating an empty series when there is room. `make_key` is
    /// called only when the series is new.
    pub fn entry<D: Dimension>(
        &mut self,
        parts: &Parts<'_, D>,
        make_key: impl FnOnce() -> SeriesKey,
    ) -> Result<&mut Histogram, Full> {
        let hash = parts.hash_with(&self.hasher);
        let table = match self.table.find_entry(hash, |e| parts.matches(&e.key)) {
            Ok(found) => return Ok(&mut found.into_mut().histogram),
            Err(absent) => absent.into_table(),
        };
        if table.len() >= self.max_series {
            return Err(Full::Series);
        }
        let key = make_key();
        let bytes = key.heap_bytes();
        if self.key_bytes.saturating_add(bytes) > self.max_key_bytes {
            return Err(Full::KeyBytes);
        }
        self.key_bytes += bytes;
        let entry = Entry {
            hash,
            key,
            histogram: Histogram::new(),
        };
        Ok(&mut table
            .insert_unique(hash, entry, |e| e.hash)
            .into_mut()
            .histogram)
    }

    /// The histogram of an owned key, creating the series when there is room.
    pub fn entry_for_key(&mut self, key: &SeriesKey) -> Result<&mut Histogram, Full> {
        self.entry(&key.parts(), || key.clone())
    }

    /// Every series, sorted by key; the map is left empty (its table memory is kept).
    pub fn drain(&mut self) -> Vec<Series> {
        self.key_bytes = 0;
        let mut out: Vec<Series> = self
            .table
            .drain()
            .map(|e| Series {
                key: e.key,
                histogram: e.histogram,
            })
            .collect();
        // Keys are unique, so an unstable sort gives the same order, with fewer moves.
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        out
    }
}
