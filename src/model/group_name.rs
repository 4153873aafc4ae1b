//! Group names (and other strings many tasks repeat), stored once however
//! many tasks refer to them.
//!
//! A cluster has a few thousand groups but every task names several of them,
//! and every Marathon app version remembers its own list: as `String`s that
//! is one small heap block per membership (at 33,334 tasks × 3 groups, more
//! memory than the tasks themselves). A [`GroupName`] is a shared pointer to
//! one copy per distinct name, handed out by a process-wide interner.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A group's name (any string; it never becomes nft syntax). Compares,
/// orders, hashes, prints and serializes as the `str` it holds.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(Arc<str>);

/// Names handed out, so that equal names share one copy.
struct Interner {
    names: HashSet<Arc<str>>,
    /// Names nobody else holds any more are dropped when `names` reaches
    /// this size (so a cluster that renames groups does not grow it forever).
    sweep_at: usize,
}

/// `names` is never swept below this size.
const MIN_SWEEP: usize = 1024;

static INTERNER: LazyLock<Mutex<Interner>> = LazyLock::new(|| {
    Mutex::new(Interner {
        names: HashSet::new(),
        sweep_at: MIN_SWEEP,
    })
});

/// The shared copy of `name`: for strings many tasks repeat (group names,
/// agent ids).
pub fn intern(name: &str) -> Arc<str> {
    // A panic while the lock was held cannot leave the set inconsistent
    // (each operation is a single insert or retain), so a poisoned lock
    // is used as is.
    let mut interner = INTERNER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = interner.names.get(name) {
        return Arc::clone(shared);
    }
    if interner.names.len() >= interner.sweep_at {
        interner.names.retain(|n| Arc::strong_count(n) > 1);
        interner.sweep_at = (2 * interner.names.len()).max(MIN_SWEEP);
    }
    let shared: Arc<str> = Arc::from(name);
    interner.names.insert(Arc::clone(&shared));
    shared
}

impl GroupName {
    /// The shared copy of `name`.
    pub fn new(name: &str) -> GroupName {
        GroupName(intern(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for GroupName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for GroupName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for GroupName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for GroupName {
    fn from(name: &str) -> GroupName {
        GroupName::new(name)
    }
}

impl PartialEq<str> for GroupName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for GroupName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for GroupName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<GroupName, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(GroupName::new(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unused_names_are_swept() {
        for i in 0..3 * MIN_SWEEP {
            GroupName::new(&format!("group-name-test-sweep-{i}"));
        }
        let kept = GroupName::new("group-name-test-kept");
        for i in 0..3 * MIN_SWEEP {
            GroupName::new(&format!("group-name-test-sweep-again-{i}"));
        }
        let len = INTERNER.lock().unwrap().names.len();
        assert!(len < 3 * MIN_SWEEP, "{len} names kept");
        assert!(Arc::ptr_eq(
            &kept.0,
            &GroupName::new("group-name-test-kept").0
        ));
    }
}
