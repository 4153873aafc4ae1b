//! Group names (and other strings many tasks repeat), stored once however
//! many tasks refer to them.
//!
//! A cluster has a few thousand groups but every task names several of them,
//! and every Marathon app version remembers its own list: as `String`s that
//! is one small heap block per membership (at 33,334 tasks × 3 groups, more
//! memory than the tasks themselves). An [`Interned`] string is a shared
//! pointer to one copy per distinct string, handed out by a process-wide
//! interner.
//!
//! A string leaves the interner as soon as the last [`Interned`] holding it
//! is dropped: names come from the master, and a master that sends a
//! million distinct names once (renamed groups, hostile input) must not
//! leave them resident. This costs a few atomic operations per drop and a
//! lock only when the last holder goes, never a sweep over every name.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string from the interner (a group name, an agent id). Compares,
/// orders, hashes, prints and serializes as the `str` it holds.
///
/// One pointer wide (`Arc<Box<str>>`, not the fat `Arc<str>`): it is held
/// by every task (agent) and every membership (group), tens of thousands
/// of copies, while the names themselves are few.
pub struct Interned(ManuallyDrop<Shared>);

type Shared = Arc<Box<str>>;

/// An interner entry: hashes and compares as the `str` it holds, so the
/// set can be searched by `&str`.
struct Entry(Shared);

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        **self.0 == **other.0
    }
}

impl Eq for Entry {}

impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` requires it.
        (**self.0).hash(state);
    }
}

/// A group's name (any string; it never becomes nft syntax).
pub type GroupName = Interned;

/// The strings handed out, so that equal strings share one copy. Each entry
/// is held by the set and by the [`Interned`] values that use it; an entry
/// only the set holds is removed by the drop that made it so.
static INTERNER: LazyLock<Mutex<HashSet<Entry>>> = LazyLock::new(Default::default);

/// The interner's table is not shrunk below this many entries.
const MIN_CAPACITY: usize = 1024;

fn interner() -> MutexGuard<'static, HashSet<Entry>> {
    // A panic while the lock was held cannot leave the set inconsistent
    // (each operation is a single insert or remove), so a poisoned lock
    // is used as is.
    INTERNER.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Interned {
    /// The shared copy of `name`.
    pub fn new(name: &str) -> Interned {
        let mut names = interner();
        if let Some(entry) = names.get(name) {
            return Interned(ManuallyDrop::new(Arc::clone(&entry.0)));
        }
        let shared: Shared = Arc::new(Box::from(name));
        names.insert(Entry(Arc::clone(&shared)));
        Interned(ManuallyDrop::new(shared))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Clone for Interned {
    fn clone(&self) -> Interned {
        Interned(ManuallyDrop::new(Arc::clone(&self.0)))
    }
}

impl Drop for Interned {
    fn drop(&mut self) {
        // SAFETY: `self.0` is not used again (this is the drop).
        let shared = unsafe { ManuallyDrop::take(&mut self.0) };
        let watch = Arc::downgrade(&shared);
        drop(shared);
        // One strong reference left: the set's. Whoever brought the count
        // to one (the last of several concurrent drops included) sees it
        // here; the check is repeated under the lock, where nobody can take
        // a new reference from the set.
        if watch.strong_count() != 1 {
            return;
        }
        let mut names = interner();
        if watch.strong_count() == 1 {
            if let Some(shared) = watch.upgrade() {
                names.remove(&**shared);
            }
            // Nor does the table keep the size of a past burst of names
            // (halving when a quarter full is amortised O(1) per name).
            if names.capacity() > MIN_CAPACITY && names.len() < names.capacity() / 4 {
                let len = names.len();
                names.shrink_to(len * 2);
            }
        }
    }
}

impl PartialEq for Interned {
    fn eq(&self, other: &Interned) -> bool {
        // One copy per string: the same pointer is the same string.
        Arc::ptr_eq(&self.0, &other.0) || **self.0 == **other.0
    }
}

impl Eq for Interned {}

impl PartialOrd for Interned {
    fn partial_cmp(&self, other: &Interned) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Interned {
    fn cmp(&self, other: &Interned) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Interned {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` requires it.
        self.as_str().hash(state);
    }
}

impl Deref for Interned {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Interned {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Interned {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Interned {
    fn from(name: &str) -> Interned {
        Interned::new(name)
    }
}

impl PartialEq<str> for Interned {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Interned {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Interned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Interned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl Serialize for Interned {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Interned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Interned, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Interned::new(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interned(name: &str) -> bool {
        interner().contains(name)
    }

    #[test]
    fn equal_names_share_one_copy() {
        let a = GroupName::new("group-name-test-shared");
        let b = GroupName::new(&String::from("group-name-test-shared"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_eq!(a, "group-name-test-shared");
        assert_ne!(a, GroupName::new("group-name-test-other"));
    }

    #[test]
    fn behaves_like_the_string() {
        let names = ["b", "a", "", "x\"; drop", "ü"];
        let mut ours: Vec<GroupName> = names.iter().map(|n| GroupName::new(n)).collect();
        let mut theirs: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        ours.sort();
        theirs.sort();
        assert!(ours
            .iter()
            .map(GroupName::as_str)
            .eq(theirs.iter().map(String::as_str)));
        let json = serde_json::to_string(&ours).unwrap();
        assert_eq!(json, serde_json::to_string(&theirs).unwrap());
        assert_eq!(serde_json::from_str::<Vec<GroupName>>(&json).unwrap(), ours);
        assert_eq!(format!("{:?}", ours[3]), format!("{:?}", theirs[3]));
        assert_eq!(ours[4].to_string(), "ü");
    }

    #[test]
    fn a_name_leaves_the_interner_with_its_last_holder() {
        let a = GroupName::new("group-name-test-last-holder");
        let b = a.clone();
        let c = GroupName::new("group-name-test-last-holder");
        drop(a);
        drop(c);
        assert!(interned("group-name-test-last-holder"), "b still holds it");
        drop(b);
        assert!(!interned("group-name-test-last-holder"));
        // A single name is freed too: there is no threshold to reach.
        drop(GroupName::new("group-name-test-once"));
        assert!(!interned("group-name-test-once"));
        // The table shrinks back after a burst of names.
        let burst: Vec<GroupName> = (0..20_000)
            .map(|i| GroupName::new(&format!("group-name-test-burst-{i}")))
            .collect();
        assert!(interner().capacity() >= 20_000);
        drop(burst);
        // (Other tests intern names meanwhile: checked as a ratio.)
        let names = interner();
        let (len, capacity) = (names.len(), names.capacity());
        drop(names);
        assert!(
            capacity <= MIN_CAPACITY.max(4 * len + 4),
            "{capacity} slots for {len} names"
        );
        // Interned again, it is a fresh copy that works as before.
        let again = GroupName::new("group-name-test-last-holder");
        assert!(interned("group-name-test-last-holder"));
        assert_eq!(again, "group-name-test-last-holder");
    }

    #[test]
    fn concurrent_drops_of_one_name_leave_nothing_behind() {
        for round in 0..200 {
            let name = format!("group-name-test-race-{round}");
            let holders: Vec<GroupName> = (0..8).map(|_| GroupName::new(&name)).collect();
            std::thread::scope(|s| {
                for h in holders {
                    s.spawn(move || {
                        let copy = h.clone();
                        drop(h);
                        drop(copy);
                    });
                }
                // Interning the same name meanwhile must not lose it either.
                s.spawn(|| drop(GroupName::new(&name)));
            });
            assert!(!interned(&name), "{name} left in the interner");
        }
    }
}
