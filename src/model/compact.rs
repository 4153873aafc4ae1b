//! Small sorted collections for the per-task fields of the cluster view.
//!
//! A task has a handful of IPs, groups, labels and ports. `BTreeSet` and
//! `BTreeMap` allocate a whole B-tree node (200–550 bytes) for even one
//! entry; with tens of thousands of tasks that dominates the view. These
//! types keep their entries in one exactly sized, sorted, deduplicated boxed
//! slice instead (16 bytes inline, nothing allocated when empty).
//!
//! They behave like the B-tree types they replace where groupd relies on it:
//! iteration in ascending order, set/map semantics on insert, the same
//! `Debug` output, and the same serde form (a set is a sequence in ascending
//! order, a map is a map in ascending key order), so persisted state and JSON
//! output do not change. Lookups are binary searches; inserts and removals
//! move the elements after the position (fine for a few dozen entries, not
//! meant for large collections).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A sorted set of a few elements: a `BTreeSet` in a boxed slice.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VecSet<T>(Box<[T]>);

impl<T> VecSet<T> {
    pub fn new() -> Self {
        VecSet(Box::default())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements in ascending order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    pub fn first(&self) -> Option<&T> {
        self.0.first()
    }

    pub fn last(&self) -> Option<&T> {
        self.0.last()
    }

    pub fn clear(&mut self) {
        self.0 = Box::default();
    }

    /// Keeps the elements for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.retain(keep);
        self.0 = v.into_boxed_slice();
    }
}

impl<T: Ord> VecSet<T> {
    fn find<Q: Ord + ?Sized>(&self, value: &Q) -> Result<usize, usize>
    where
        T: Borrow<Q>,
    {
        self.0.binary_search_by(|e| e.borrow().cmp(value))
    }

    pub fn contains<Q: Ord + ?Sized>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.find(value).is_ok()
    }

    pub fn get<Q: Ord + ?Sized>(&self, value: &Q) -> Option<&T>
    where
        T: Borrow<Q>,
    {
        self.find(value).ok().map(|i| &self.0[i])
    }

    /// Adds `value`; false (and the set unchanged) if it was already there.
    pub fn insert(&mut self, value: T) -> bool {
        match self.find(&value) {
            Ok(_) => false,
            Err(i) => {
                let mut v = std::mem::take(&mut self.0).into_vec();
                v.insert(i, value);
                self.0 = v.into_boxed_slice();
                true
            }
        }
    }

    /// Removes `value`; false if it was not there.
    pub fn remove<Q: Ord + ?Sized>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        match self.find(value) {
            Ok(i) => {
                let mut v = std::mem::take(&mut self.0).into_vec();
                v.remove(i);
                self.0 = v.into_boxed_slice();
                true
            }
            Err(_) => false,
        }
    }

    /// True if every element of `self` is in `other`.
    pub fn is_subset(&self, other: &VecSet<T>) -> bool {
        self.iter().all(|e| other.contains(e))
    }

    /// The elements of `self` that are also in `other`, ascending.
    pub fn intersection<'a>(&'a self, other: &'a VecSet<T>) -> impl Iterator<Item = &'a T> + 'a {
        self.iter().filter(move |e| other.contains(*e))
    }

    /// The elements of `self` that are not in `other`, ascending.
    pub fn difference<'a>(&'a self, other: &'a VecSet<T>) -> impl Iterator<Item = &'a T> + 'a {
        self.iter().filter(move |e| !other.contains(*e))
    }
}

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for VecSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<T: Ord> FromIterator<T> for VecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v: Vec<T> = iter.into_iter().collect();
        v.sort();
        v.dedup();
        VecSet(v.into_boxed_slice())
    }
}

impl<T: Ord> Extend<T> for VecSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let had = v.len();
        v.extend(iter);
        if v.len() != had {
            // Stable sort keeps the element already present first, and
            // `dedup` keeps the first of equals, as `BTreeSet::insert` does.
            v.sort();
            v.dedup();
        }
        self.0 = v.into_boxed_slice();
    }
}

impl<'a, T: Ord + Copy + 'a> Extend<&'a T> for VecSet<T> {
    fn extend<I: IntoIterator<Item = &'a T>>(&mut self, iter: I) {
        self.extend(iter.into_iter().copied());
    }
}

impl<T: Ord, const N: usize> From<[T; N]> for VecSet<T> {
    fn from(array: [T; N]) -> Self {
        array.into_iter().collect()
    }
}

impl<T> IntoIterator for VecSet<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize> Serialize for VecSet<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de> + Ord> Deserialize<'de> for VecSet<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(VecSet::from_iter)
    }
}

/// A sorted map of a few entries: a `BTreeMap` in a boxed slice of pairs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VecMap<K, V>(Box<[(K, V)]>);

/// Iterator over `(&K, &V)` in ascending key order.
pub type Iter<'a, K, V> =
    std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

impl<K, V> VecMap<K, V> {
    pub fn new() -> Self {
        VecMap(Box::default())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in ascending key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        self.0.first().map(|(k, v)| (k, v))
    }

    pub fn clear(&mut self) {
        self.0 = Box::default();
    }

    /// Keeps the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.retain_mut(|(k, v)| keep(k, v));
        self.0 = v.into_boxed_slice();
    }
}

impl<K: Ord, V> VecMap<K, V> {
    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    /// Sets `key` to `value`, returning the old value (the key already in
    /// the map is kept, as in `BTreeMap::insert`).
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                let mut v = std::mem::take(&mut self.0).into_vec();
                v.insert(i, (key, value));
                self.0 = v.into_boxed_slice();
                None
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        let mut v = std::mem::take(&mut self.0).into_vec();
        let (_, value) = v.remove(i);
        self.0 = v.into_boxed_slice();
        Some(value)
    }

    /// The value of `key`, inserting `(owned(), make())` first if there is
    /// none (`BTreeMap::entry(key).or_insert_with(make)` without building the
    /// owned key when it is already there). `owned()` must equal `key`.
    pub fn get_or_insert_with<Q>(
        &mut self,
        key: &Q,
        owned: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                let mut v = std::mem::take(&mut self.0).into_vec();
                v.insert(i, (owned(), make()));
                self.0 = v.into_boxed_slice();
                i
            }
        };
        &mut self.0[i].1
    }
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap::new()
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for VecMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    /// As `BTreeMap::from_iter`: of several entries with one key, the last
    /// value wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = VecMap::new();
        map.extend(iter);
        map
    }
}

impl<K: Ord, V> Extend<(K, V)> for VecMap<K, V> {
    /// As `BTreeMap::extend`: an existing key keeps its place and gets the
    /// new value; of several new entries with one key, the last wins.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let had = v.len();
        v.extend(iter);
        if v.len() != had {
            // Stable: among equal keys the older entry comes first.
            v.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(K, V)> = Vec::with_capacity(v.len());
            for (k, value) in v {
                match out.last_mut() {
                    Some(last) if last.0.cmp(&k) == Ordering::Equal => last.1 = value,
                    _ => out.push((k, value)),
                }
            }
            v = out;
        }
        self.0 = v.into_boxed_slice();
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for VecMap<K, V> {
    fn from(array: [(K, V); N]) -> Self {
        array.into_iter().collect()
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for VecMap<K, V> {
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry found for key")
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
            type Value = VecMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = access.next_entry()? {
                    v.push(entry);
                }
                Ok(v.into_iter().collect())
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn set_behaves_like_btreeset() {
        let items = [5, 1, 3, 1, 9, 3, 0];
        let mut ours: VecSet<i32> = items.into_iter().collect();
        let mut theirs: BTreeSet<i32> = items.into_iter().collect();
        assert!(ours.iter().eq(theirs.iter()));
        assert_eq!(ours.insert(4), theirs.insert(4));
        assert_eq!(ours.insert(4), theirs.insert(4));
        assert_eq!(ours.remove(&1), theirs.remove(&1));
        assert_eq!(ours.remove(&1), theirs.remove(&1));
        ours.extend([7, 0, 8]);
        theirs.extend([7, 0, 8]);
        assert!(ours.iter().eq(theirs.iter()));
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(ours.contains(&7), theirs.contains(&7));
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&theirs).unwrap()
        );
        let back: VecSet<i32> = serde_json::from_str("[3,1,3,2]").unwrap();
        assert_eq!(back, VecSet::from([1, 2, 3]));
        assert_eq!(VecSet::<i32>::new().into_iter().count(), 0);
    }

    #[test]
    fn map_behaves_like_btreemap() {
        let items = [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)];
        let mut ours: VecMap<&str, i32> = items.into_iter().collect();
        let mut theirs: BTreeMap<&str, i32> = items.into_iter().collect();
        assert!(ours.iter().eq(theirs.iter()));
        assert_eq!(ours.insert("b", 7), theirs.insert("b", 7));
        assert_eq!(ours.insert("d", 8), theirs.insert("d", 8));
        assert_eq!(ours.remove("a"), theirs.remove("a"));
        assert_eq!(ours.remove("a"), theirs.remove("a"));
        ours.extend([("e", 1), ("c", 2), ("e", 3)]);
        theirs.extend([("e", 1), ("c", 2), ("e", 3)]);
        assert!(ours.iter().eq(theirs.iter()));
        *ours.get_or_insert_with(&"f", || "f", || 0) += 1;
        *ours.get_or_insert_with(&"f", || "f", || 0) += 1;
        *theirs.entry("f").or_insert(0) += 1;
        *theirs.entry("f").or_insert(0) += 1;
        assert!(ours.iter().eq(theirs.iter()));
        assert_eq!(ours.get("c"), theirs.get("c"));
        assert_eq!(ours["c"], theirs["c"]);
        assert!(ours.keys().eq(theirs.keys()));
        assert!(ours.values().eq(theirs.values()));
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&theirs).unwrap()
        );
        let json = r#"{"z":1,"y":2,"z":3}"#;
        let ours: VecMap<String, i32> = serde_json::from_str(json).unwrap();
        let theirs: BTreeMap<String, i32> = serde_json::from_str(json).unwrap();
        assert!(ours.iter().eq(theirs.iter()));
    }
}
