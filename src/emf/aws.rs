//! The `_aws` metadata object, decoded in one pass into small typed structs that keep a wrong
//! type as a fact ([`Field::Wrong`]) instead of failing, so validation can name every problem.
//!
//! In: the `_aws` member (JSON text or a parsed `Value`). Out: [`AwsField`]. Strings borrow from
//! the input unless they hold escapes. A directive's dimension keys live in one flat list.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::json::{Key, Num};
use super::small::Small;

/// The directives of `_aws.CloudWatchMetrics` (one inline: the usual line has one).
pub(crate) type Directives<'a> = Small<Directive<'a>, 1>;
/// The definitions of a directive's `Metrics` (a few inline).
pub(crate) type Definitions<'a> = Small<Definition<'a>, 2>;

/// A member that may be missing, of the right shape, or of a wrong one.
#[derive(Debug, Default, PartialEq)]
pub(crate) enum Field<T> {
    #[default]
    Missing,
    Ok(T),
    Wrong,
}

/// `_aws`: an object, or something else.
// Large on purpose: the working lists are inline, and the scanner fills the value in place.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub(crate) enum AwsField<'a> {
    Object(Aws<'a>),
    NotObject,
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct Aws<'a> {
    pub(crate) timestamp: Field<Num>,
    pub(crate) directives: Field<Directives<'a>>,
}

/// One `CloudWatchMetrics` entry: an object, or something else.
// Large on purpose: see `AwsField`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default, PartialEq)]
pub(crate) enum Directive<'a> {
    Object(DirectiveBody<'a>),
    #[default]
    NotObject,
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct DirectiveBody<'a> {
    pub(crate) namespace: Field<Cow<'a, str>>,
    /// `Wrong` unless an array of arrays of strings.
    pub(crate) dimensions: Field<DimensionSets<'a>>,
    /// `Wrong` unless an array of objects.
    pub(crate) metrics: Field<Definitions<'a>>,
}

/// The dimension sets of a directive: all keys in one list, each set a range of it. The usual
/// directive has one set, which needs no list of boundaries.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DimensionSets<'a> {
    pub(crate) keys: Small<Cow<'a, str>, 2>,
    /// End (exclusive) in `keys` of each set but the last, which ends at `keys.len()`; sets
    /// are consecutive.
    ends: Vec<usize>,
    /// How many sets.
    count: usize,
}

impl<'a> DimensionSets<'a> {
    /// Close a set whose keys were pushed from position `start` of `keys` on.
    pub(crate) fn close_set(&mut self, start: usize) {
        if self.count > 0 {
            // The set before this one ends where this one starts.
            self.ends.push(start);
        }
        self.count += 1;
    }

    /// How many sets.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each set's keys, in order.
    pub(crate) fn sets(&self) -> impl Iterator<Item = &[Cow<'a, str>]> {
        let last = (self.count > 0).then_some(self.keys.len());
        let mut start = 0;
        self.ends.iter().copied().chain(last).map(move |end| {
            // The ends are increasing and ≤ keys.len() by construction (see `close_set`).
            let set = self.keys.get(start..end).unwrap_or(&[]);
            start = end;
            set
        })
    }
}

/// One `Metrics` entry.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Definition<'a> {
    pub(crate) name: Field<Cow<'a, str>>,
    pub(crate) unit: Field<Cow<'a, str>>,
    pub(crate) resolution: Field<Num>,
}

/// Any JSON value, read and dropped. Unlike `serde::de::IgnoredAny` it descends through the
/// deserializer's own recursion, so serde_json's nesting limit applies inside `_aws` too.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor::<Skip>(PhantomData))
    }
}

impl<'de> Shape<'de> for Skip {
    fn wrong() -> Self {
        Skip
    }
}

/// A JSON shape, read leniently: every kind of value is accepted, those of the wrong kind are
/// consumed and turned into [`Shape::wrong`].
trait Shape<'de>: Sized {
    fn wrong() -> Self;
    fn string(_: Cow<'de, str>) -> Self {
        Self::wrong()
    }
    fn number(_: Num) -> Self {
        Self::wrong()
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Self::wrong())
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Self::wrong())
    }
}

struct ShapeVisitor<T>(PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for ShapeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::wrong())
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::wrong())
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::wrong())
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::number(Num::U(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::number(Num::I(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<T, E> {
        Ok(T::number(Num::F(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<T, E> {
        Ok(T::string(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::string(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<T, E> {
        Ok(T::string(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
}

macro_rules! deserialize_via_shape {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ShapeVisitor::<Self>(PhantomData))
            }
        }
    )*};
}

deserialize_via_shape!(
    AwsField<'de>,
    Directive<'de>,
    Field<Num>,
    Field<Cow<'de, str>>,
    Field<Directives<'de>>,
    Field<DimensionSets<'de>>,
    Field<Definitions<'de>>,
    Lenient<Definition<'de>>
);

impl<'de> Shape<'de> for Field<Num> {
    fn wrong() -> Self {
        Field::Wrong
    }
    fn number(n: Num) -> Self {
        Field::Ok(n)
    }
}

impl<'de> Shape<'de> for Field<Cow<'de, str>> {
    fn wrong() -> Self {
        Field::Wrong
    }
    fn string(s: Cow<'de, str>) -> Self {
        Field::Ok(s)
    }
}

impl<'de> Shape<'de> for AwsField<'de> {
    fn wrong() -> Self {
        AwsField::NotObject
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut aws = Aws::default();
        // A repeated key: the last one wins.
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                "Timestamp" => aws.timestamp = map.next_value()?,
                "CloudWatchMetrics" => aws.directives = map.next_value()?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(AwsField::Object(aws))
    }
}

impl<'de> Shape<'de> for Field<Directives<'de>> {
    fn wrong() -> Self {
        Field::Wrong
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut list = Directives::default();
        while let Some(d) = seq.next_element::<Directive<'de>>()? {
            list.push(d);
        }
        Ok(Field::Ok(list))
    }
}

impl<'de> Shape<'de> for Directive<'de> {
    fn wrong() -> Self {
        Directive::NotObject
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut d = DirectiveBody::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                "Namespace" => d.namespace = map.next_value()?,
                "Dimensions" => d.dimensions = map.next_value()?,
                "Metrics" => d.metrics = map.next_value()?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Directive::Object(d))
    }
}

impl<'de> Shape<'de> for Field<DimensionSets<'de>> {
    fn wrong() -> Self {
        Field::Wrong
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut sets = DimensionSets::default();
        let mut ok = true;
        while let Some(set_ok) = seq.next_element_seed(SetSeed(&mut sets))? {
            ok &= set_ok;
        }
        Ok(if ok { Field::Ok(sets) } else { Field::Wrong })
    }
}

/// Reads one dimension set, appending its keys to the directive's list; yields whether it was
/// an array of strings.
struct SetSeed<'s, 'a>(&'s mut DimensionSets<'a>);

impl<'de> DeserializeSeed<'de> for SetSeed<'_, 'de> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SetSeed<'_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut ok = true;
        let start = self.0.keys.len();
        while let Some(key) = seq.next_element::<Field<Cow<'de, str>>>()? {
            match key {
                Field::Ok(k) => self.0.keys.push(k),
                _ => ok = false,
            }
        }
        self.0.close_set(start);
        Ok(ok)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
}

/// A `Metrics` entry that may not be an object.
struct Lenient<T>(Option<T>);

impl<'de> Shape<'de> for Lenient<Definition<'de>> {
    fn wrong() -> Self {
        Lenient(None)
    }
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut m = Definition::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                "Name" => m.name = map.next_value()?,
                "Unit" => m.unit = map.next_value()?,
                "StorageResolution" => m.resolution = map.next_value()?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Lenient(Some(m)))
    }
}

impl<'de> Shape<'de> for Field<Definitions<'de>> {
    fn wrong() -> Self {
        Field::Wrong
    }
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut list = Definitions::default();
        let mut ok = true;
        while let Some(Lenient(m)) = seq.next_element::<Lenient<Definition<'de>>>()? {
            match m {
                Some(m) if ok => list.push(m),
                Some(_) => {}
                None => ok = false,
            }
        }
        Ok(if ok { Field::Ok(list) } else { Field::Wrong })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(s: &str) -> AwsField<'_> {
        serde_json::from_str(s).unwrap_or(AwsField::NotObject)
    }

    #[test]
    fn reads_a_directive() {
        let a = aws(
            r#"{"Timestamp":5,"LogGroupName":"x","CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["a","b"],[],["c"]],"Metrics":[{"Name":"M","Unit":"Count","StorageResolution":1,"Extra":[1]}]}]}"#,
        );
        let AwsField::Object(a) = a else {
            panic!("not an object")
        };
        assert_eq!(a.timestamp, Field::Ok(Num::U(5)));
        let Field::Ok(dirs) = a.directives else {
            panic!("no directives")
        };
        let Some(Directive::Object(d)) = dirs.first() else {
            panic!("no directive")
        };
        assert_eq!(d.namespace, Field::Ok("N".into()));
        let Field::Ok(sets) = &d.dimensions else {
            panic!("no sets")
        };
        let sets: Vec<Vec<&str>> = sets
            .sets()
            .map(|s| s.iter().map(|k| &**k).collect())
            .collect();
        assert_eq!(sets, vec![vec!["a", "b"], vec![], vec!["c"]]);
        let Field::Ok(ms) = &d.metrics else {
            panic!("no metrics")
        };
        assert_eq!(ms[0].name, Field::Ok("M".into()));
        assert_eq!(ms[0].unit, Field::Ok("Count".into()));
        assert_eq!(ms[0].resolution, Field::Ok(Num::U(1)));
    }

    #[test]
    fn wrong_shapes_are_facts() {
        assert_eq!(aws("[1]"), AwsField::NotObject);
        let AwsField::Object(a) = aws(r#"{"Timestamp":"1","CloudWatchMetrics":{"a":1}}"#) else {
            panic!("not an object")
        };
        assert_eq!(a.timestamp, Field::Wrong);
        assert_eq!(a.directives, Field::Wrong);
        let AwsField::Object(a) = aws(
            r#"{"CloudWatchMetrics":[7,{"Namespace":1,"Dimensions":[["a",2]],"Metrics":[{"Name":"M"},3]}]}"#,
        ) else {
            panic!("not an object")
        };
        assert_eq!(a.timestamp, Field::Missing);
        let Field::Ok(dirs) = a.directives else {
            panic!("no directives")
        };
        assert_eq!(dirs[0], Directive::NotObject);
        let Directive::Object(d) = &dirs[1] else {
            panic!("not an object")
        };
        assert_eq!(d.namespace, Field::Wrong);
        assert_eq!(d.dimensions, Field::Wrong);
        assert_eq!(d.metrics, Field::Wrong);
    }

    #[test]
    fn last_duplicate_wins() {
        let AwsField::Object(a) = aws(r#"{"Timestamp":1,"Timestamp":2}"#) else {
            panic!("not an object")
        };
        assert_eq!(a.timestamp, Field::Ok(Num::U(2)));
    }
}
