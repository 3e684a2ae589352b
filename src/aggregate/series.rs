//! The series map: one [`Histogram`] per [`SeriesKey`], kept across drains, with a cap on the
//! series held and on the bytes their keys hold.
//!
//! In: a key, either owned or borrowed from a parsed [`DataPoint`], and what to add to its
//! histogram. Out: whether it was added, or a refusal when a new series would pass a cap; at a
//! drain, every series with data since the last one. Finding an existing series from a borrowed
//! data point allocates nothing: the table is keyed by a hash of the borrowed parts, compared
//! part by part on a hit with the key the table holds in one buffer ([`Flat`]). The owned
//! [`SeriesKey`] is built from that buffer at the series' first drain and shared by every drain
//! after; a drain resets each histogram in place ([`Histogram::take`]) and evicts the series
//! that received nothing since the drain before (see [`SeriesMap`]). A drain hands the series out
//! sorted by key; each series keeps its place in that order as a rank, so the next drain orders
//! the series it kept by comparing two integers and compares keys only for the new ones.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::histogram::Histogram;
use crate::emf::{DataPoint, Unit};

/// What identifies a series: namespace, metric name, dimensions (sorted by key, unique keys),
/// unit and storage resolution. Cloning is cheap (the parts are shared), so the aggregator builds
/// a series' key once and hands out clones of it at every drain.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey(Arc<KeyParts>);

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct KeyParts {
    namespace: String,
    name: String,
    dimensions: Vec<(String, String)>,
    unit: Unit,
    storage_resolution: u32,
}

impl fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeriesKey")
            .field("namespace", &self.0.namespace)
            .field("name", &self.0.name)
            .field("dimensions", &self.0.dimensions)
            .field("unit", &self.0.unit)
            .field("storage_resolution", &self.0.storage_resolution)
            .finish()
    }
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
        SeriesKey(Arc::new(KeyParts {
            namespace: namespace.into(),
            name: name.into(),
            dimensions: kept,
            unit,
            storage_resolution,
        }))
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
        &self.0.namespace
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// (key, value) pairs sorted by key.
    pub fn dimensions(&self) -> &[(String, String)] {
        &self.0.dimensions
    }

    pub fn unit(&self) -> Unit {
        self.0.unit
    }

    pub fn storage_resolution(&self) -> u32 {
        self.0.storage_resolution
    }

    /// Heap bytes the key holds (string contents and the dimension array).
    pub fn heap_bytes(&self) -> usize {
        self.0.namespace.len()
            + self.0.name.len()
            + self.0.dimensions.len() * size_of::<(String, String)>()
            + self
                .0
                .dimensions
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    fn parts(&self) -> Parts<'_, (String, String)> {
        Parts {
            namespace: &self.0.namespace,
            name: &self.0.name,
            unit: self.0.unit,
            storage_resolution: self.0.storage_resolution,
            dimensions: &self.0.dimensions,
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

    /// Heap bytes the owned key of these parts holds (as [`SeriesKey::heap_bytes`] counts them).
    fn heap_bytes(&self) -> usize {
        self.namespace.len()
            + self.name.len()
            + self.dimensions.len() * size_of::<(String, String)>()
            + self
                .dimensions
                .iter()
                .map(|d| d.key().len() + d.value().len())
                .sum::<usize>()
    }

    /// The key in one buffer (see [`Flat`]); `None` if a string is longer than `u32::MAX`.
    fn flatten(&self) -> Option<Flat> {
        let mut b = Vec::with_capacity(FLAT_HEAD + self.heap_bytes());
        b.push(self.unit as u8);
        b.extend_from_slice(&self.storage_resolution.to_le_bytes());
        put_str(&mut b, self.namespace)?;
        put_str(&mut b, self.name)?;
        b.extend_from_slice(&u32::try_from(self.dimensions.len()).ok()?.to_le_bytes());
        for d in self.dimensions {
            put_str(&mut b, d.key())?;
            put_str(&mut b, d.value())?;
        }
        Some(Flat(b.into_boxed_slice()))
    }

    /// Whether `flat` holds exactly these parts.
    #[inline]
    fn matches(&self, flat: &Flat) -> bool {
        let mut r = Reader(&flat.0);
        r.byte() == Some(self.unit as u8)
            && r.u32() == Some(self.storage_resolution)
            && r.str_is(self.namespace)
            && r.str_is(self.name)
            && r.u32().and_then(|n| usize::try_from(n).ok()) == Some(self.dimensions.len())
            && self
                .dimensions
                .iter()
                .all(|d| r.str_is(d.key()) && r.str_is(d.value()))
            && r.0.is_empty()
    }
}

/// Byte equality, inline for the short strings keys are made of: up to 16 bytes it compares two
/// overlapping words, cheaper than the call to `memcmp` that `==` makes.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8)
    } else if (4..8).contains(&n) {
        word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4)
    } else if n < 4 {
        a.iter().zip(b).all(|(x, y)| x == y)
    } else {
        a == b
    }
}

/// The 8 bytes of `s` from `at` (0 past its end; the callers stay inside).
#[inline]
fn word8(s: &[u8], at: usize) -> u64 {
    s.get(at..)
        .and_then(|t| t.first_chunk::<8>())
        .map_or(0, |w| u64::from_ne_bytes(*w))
}

/// The 4 bytes of `s` from `at` (0 past its end; the callers stay inside).
#[inline]
fn word4(s: &[u8], at: usize) -> u32 {
    s.get(at..)
        .and_then(|t| t.first_chunk::<4>())
        .map_or(0, |w| u32::from_ne_bytes(*w))
}

/// Bytes of a flat key besides its strings: unit, resolution, three lengths.
const FLAT_HEAD: usize = 1 + 4 + 3 * 4;

/// A series key in one allocation: unit (`Unit as u8`), storage resolution (u32 LE), then
/// namespace, name, the number of dimensions (u32 LE) and each dimension's key and value, every
/// string as its length (u32 LE) and its bytes. Comparing a data point with it reads one buffer
/// instead of five (the strings of a [`SeriesKey`] live in separate allocations), which matters
/// when a thousand series no longer fit in the cache.
struct Flat(Box<[u8]>);

fn put_str(b: &mut Vec<u8>, s: &str) -> Option<()> {
    b.extend_from_slice(&u32::try_from(s.len()).ok()?.to_le_bytes());
    b.extend_from_slice(s.as_bytes());
    Some(())
}

/// Reads a [`Flat`] front to back; `None` past its end.
struct Reader<'f>(&'f [u8]);

impl<'f> Reader<'f> {
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    #[inline]
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*head))
    }

    #[inline]
    fn str(&mut self) -> Option<&'f [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        if n > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(s)
    }

    /// Whether the next string is `s`.
    #[inline]
    fn str_is(&mut self, s: &str) -> bool {
        self.str().is_some_and(|t| same_bytes(t, s.as_bytes()))
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.str()?.to_vec()).ok()
    }
}

impl Flat {
    /// The owned key. `None` only if the buffer was not written by [`Parts::flatten`].
    fn key(&self) -> Option<SeriesKey> {
        let mut r = Reader(&self.0);
        let unit = *Unit::ALL.get(usize::from(r.byte()?))?;
        let storage_resolution = r.u32()?;
        let namespace = r.string()?;
        let name = r.string()?;
        let n = usize::try_from(r.u32()?).ok()?;
        let mut dimensions = Vec::with_capacity(n.min(r.0.len()));
        for _ in 0..n {
            dimensions.push((r.string()?, r.string()?));
        }
        Some(SeriesKey(Arc::new(KeyParts {
            namespace,
            name,
            dimensions,
            unit,
            storage_resolution,
        })))
    }
}

struct Entry {
    hash: u64,
    key: Flat,
    /// What the key counts against the key budget ([`Parts::heap_bytes`]).
    key_bytes: u32,
    /// The series' place in the sorted output of the last drain, or [`UNRANKED`] for a series
    /// created since. Ranks follow key order, so the next drain compares two ranked series by
    /// rank alone.
    rank: u32,
    /// The owned key, built from `key` at the series' first drain and handed out (shared) at
    /// every drain after.
    owned: Option<SeriesKey>,
    histogram: Histogram,
}

/// The rank of a series that has not been through a drain yet.
const UNRANKED: u32 = u32::MAX;

/// Fixed bytes per series held: its table entry (histogram included) with the table's control
/// byte and spare room (at most 1/8 of the slots are empty), and the owned key's shared header
/// and parts.
#[cfg(test)]
pub(crate) const fn fixed_bytes_per_series() -> usize {
    let entry = size_of::<Entry>() + 1;
    entry + entry / 7 + 2 * size_of::<usize>() + size_of::<KeyParts>()
}

/// Why a new series was not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// `max_series` series with data already.
    Series,
    /// The keys of the series with data already hold their byte budget.
    KeyBytes,
}

/// The series, kept across drains: a drain hands out the data of every series that has some and
/// resets it in place (its key and bucket allocation stay), and evicts the series that received
/// nothing since the drain before. A series kept but idle since the last drain still holds its
/// slot and key bytes until the next drain, or until a new series needs the room: then every idle
/// series is evicted at once. So the caps count, in effect, the series with data since the last
/// drain, and memory stays within them at all times.
pub(crate) struct SeriesMap {
    table: HashTable<Entry>,
    hasher: DefaultHashBuilder,
    max_series: usize,
    key_bytes: usize,
    max_key_bytes: usize,
    /// Series with data since the last drain (the others in the table are idle).
    active: usize,
}

impl SeriesMap {
    pub fn new(max_series: usize, max_key_bytes: usize) -> SeriesMap {
        SeriesMap {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            max_series,
            key_bytes: 0,
            max_key_bytes,
            active: 0,
        }
    }

    /// Series with data since the last drain.
    pub fn len(&self) -> usize {
        self.active
    }

    /// Series held, the idle ones kept from the last drain included (at most `max_series`).
    pub fn held(&self) -> usize {
        self.table.len()
    }

    /// Key bytes of the series held.
    pub fn key_bytes(&self) -> usize {
        self.key_bytes
    }

    /// The histogram of a series with data since the last drain.
    pub fn get(&self, key: &SeriesKey) -> Option<&Histogram> {
        let parts = key.parts();
        let hash = parts.hash_with(&self.hasher);
        self.table
            .find(hash, |e| parts.matches(&e.key))
            .map(|e| &e.histogram)
            .filter(|h| !h.is_empty())
    }

    /// Runs `add` on the histogram of `parts`, creating an empty series first when there is
    /// room (evicting the idle series if that makes room); returns what `add` returned.
    pub fn update<D: Dimension>(
        &mut self,
        parts: &Parts<'_, D>,
        add: impl FnOnce(&mut Histogram) -> bool,
    ) -> Result<bool, Full> {
        let hash = parts.hash_with(&self.hasher);
        let table = match self.table.find_entry(hash, |e| parts.matches(&e.key)) {
            Ok(found) => {
                let h = &mut found.into_mut().histogram;
                let idle = h.is_empty();
                let added = add(h);
                if idle && !h.is_empty() {
                    self.active += 1;
                }
                return Ok(added);
            }
            Err(absent) => absent.into_table(),
        };
        let bytes = parts.heap_bytes();
        let fits = |table: &HashTable<Entry>, key_bytes: usize| {
            if table.len() >= self.max_series {
                Err(Full::Series)
            } else if key_bytes.saturating_add(bytes) > self.max_key_bytes {
                Err(Full::KeyBytes)
            } else {
                Ok(())
            }
        };
        if fits(table, self.key_bytes).is_err() && table.len() > self.active {
            let mut freed = 0;
            table.retain(|e| {
                let idle = e.histogram.is_empty();
                if idle {
                    freed += e.key_bytes as usize;
                }
                !idle
            });
            self.key_bytes -= freed;
        }
        fits(table, self.key_bytes)?;
        // A string over 4 GiB cannot fit the budget either.
        let key = parts.flatten().ok_or(Full::KeyBytes)?;
        let key_bytes = u32::try_from(bytes).map_err(|_| Full::KeyBytes)?;
        self.key_bytes += bytes;
        let entry = Entry {
            hash,
            key,
            key_bytes,
            rank: UNRANKED,
            owned: None,
            histogram: Histogram::new(),
        };
        let h = &mut table
            .insert_unique(hash, entry, |e| e.hash)
            .into_mut()
            .histogram;
        let added = add(h);
        if !h.is_empty() {
            self.active += 1;
        }
        Ok(added)
    }

    /// [`SeriesMap::update`] for an owned key.
    pub fn update_key(
        &mut self,
        key: &SeriesKey,
        add: impl FnOnce(&mut Histogram) -> bool,
    ) -> Result<bool, Full> {
        self.update(&key.parts(), add)
    }

    /// Every series with data since the last drain, sorted by key; each is reset in place and
    /// kept, and the series that had no data are evicted.
    pub fn drain(&mut self) -> Vec<Series> {
        let mut freed = 0;
        self.table.retain(|e| {
            let idle = e.histogram.is_empty();
            if idle {
                freed += e.key_bytes as usize;
            }
            !idle
        });
        self.key_bytes -= freed;
        self.active = 0;
        let mut live: Vec<&mut Entry> = self.table.iter_mut().collect();
        for e in live.iter_mut().filter(|e| e.owned.is_none()) {
            // Every flat key was written by `Parts::flatten`, so it reads back.
            e.owned = e.key.key();
            debug_assert!(e.owned.is_some(), "a flat key reads back");
        }
        // Every series kept was ranked by the drain before (the others were evicted above), in
        // key order: two ranked series compare by rank, any other pair by key. Keys are unique,
        // so an unstable sort gives the same order as a stable one.
        live.sort_unstable_by(|a, b| {
            if a.rank != UNRANKED && b.rank != UNRANKED {
                a.rank.cmp(&b.rank)
            } else {
                a.owned.cmp(&b.owned)
            }
        });
        let mut out: Vec<Series> = Vec::with_capacity(live.len());
        for (rank, e) in live.into_iter().enumerate() {
            // Past u32::MAX series (not reachable in memory) ranks fall back to key comparison.
            e.rank = u32::try_from(rank).unwrap_or(UNRANKED);
            let histogram = e.histogram.take();
            if let Some(key) = e.owned.clone() {
                out.push(Series { key, histogram });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_is_byte_equality_at_every_length() {
        let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=text.len() {
            let a = &text[..n];
            let copy = a.to_vec();
            assert!(same_bytes(a, &copy), "{n}");
            for k in 0..n {
                let mut b = a.to_vec();
                b[k] ^= 1;
                assert!(!same_bytes(a, &b), "{n}, byte {k}");
            }
            if n > 0 {
                assert!(!same_bytes(a, &a[..n - 1]), "{n}");
            }
        }
    }

    #[test]
    fn unit_codes_index_all_units() {
        for (i, &u) in Unit::ALL.iter().enumerate() {
            assert_eq!(u as u8 as usize, i, "{u:?}");
        }
    }

    #[test]
    fn flat_keys_read_back_and_match_only_their_parts() {
        let key = SeriesKey::new(
            "Name space",
            "Latency",
            Unit::Milliseconds,
            1,
            vec![
                ("b".into(), "é".into()),
                ("a".into(), String::new()),
                ("c".into(), "x".repeat(300)),
            ],
        );
        let flat = key.parts().flatten().expect("short strings");
        assert_eq!(flat.key().as_ref(), Some(&key));
        assert!(key.parts().matches(&flat));
        let others = [
            SeriesKey::new(
                "Name space",
                "Latency",
                Unit::Seconds,
                1,
                key.dimensions().to_vec(),
            ),
            SeriesKey::new(
                "Name space",
                "Latency",
                Unit::Milliseconds,
                60,
                key.dimensions().to_vec(),
            ),
            SeriesKey::new(
                "Name spac",
                "Latency",
                Unit::Milliseconds,
                1,
                key.dimensions().to_vec(),
            ),
            SeriesKey::new(
                "Name space",
                "Latenc",
                Unit::Milliseconds,
                1,
                key.dimensions().to_vec(),
            ),
            SeriesKey::new("Name space", "Latency", Unit::Milliseconds, 1, Vec::new()),
            SeriesKey::new(
                "Name space",
                "Latency",
                Unit::Milliseconds,
                1,
                key.dimensions()[..2].to_vec(),
            ),
            // The same bytes split differently between key and value.
            SeriesKey::new(
                "Name space",
                "Latency",
                Unit::Milliseconds,
                1,
                vec![
                    ("a".into(), String::new()),
                    ("bé".into(), String::new()),
                    ("c".into(), "x".repeat(300)),
                ],
            ),
        ];
        for other in &others {
            assert!(!other.parts().matches(&flat), "{other:?}");
            let theirs = other.parts().flatten().expect("short strings");
            assert!(!key.parts().matches(&theirs), "{other:?}");
            assert_eq!(theirs.key().as_ref(), Some(other));
        }
        // A truncated or extended buffer matches nothing and reads back as nothing.
        let short = Flat(flat.0[..flat.0.len() - 1].into());
        assert!(!key.parts().matches(&short));
        assert!(short.key().is_none());
        let mut long = flat.0.to_vec();
        long.push(0);
        assert!(!key.parts().matches(&Flat(long.into())));
    }
}
