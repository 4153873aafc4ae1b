//! Owned tables (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST, Linux 6.9+): the
//! kernel refuses every change to them (EPERM) except from the socket that
//! owns them, and keeps them when that socket closes (fail-static). A
//! persistent table whose owner went away is an orphan: it has no owner flag
//! any more, so anyone may change it, until a process claims it by sending
//! NEWTABLE with the owner flag (`nf_tables_updtable` allows exactly that
//! transition, and only for an orphan).

use super::encode;
use super::socket::{NfSocket, NftError};
use crate::ruleset::Family;

pub const OWNER: u32 = 0x2;
pub const PERSIST: u32 = 0x4;
/// The flags of a table groupd owns.
pub const OWNED: u32 = OWNER | PERSIST;

/// A table's flags and owner as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableHead {
    pub flags: u32,
    /// NFTA_TABLE_OWNER: the owning socket's port id, while it is owned.
    pub owner: Option<u32>,
}

/// Whether this kernel can own tables, found by trying: a scratch owned
/// table is created and deleted in one transaction, which leaves nothing
/// behind. Kernels without the flags answer EOPNOTSUPP (unknown table flag)
/// or EINVAL; never guessed from the kernel version.
pub fn supported(sock: &mut NfSocket) -> Result<bool, NftError> {
    let probe = format!("groupd-owner-probe-{}", std::process::id());
    let requests = vec![
        encode::new_owned_table(Family::Inet, &probe),
        encode::delete_table(Family::Inet, &probe),
    ];
    match sock.transact(requests) {
        Ok(()) => Ok(true),
        Err(NftError::Rejected { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// What to do with an existing table before owning it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Not there, or ours already: nothing to do.
    Nothing,
    /// An orphaned persistent table: claim it without touching its content.
    Claim,
    /// A plain table (groupd in notify mode, or an older groupd): it cannot
    /// be claimed, the first reconcile replaces it with an owned copy in one
    /// transaction.
    Rebuild,
    /// Owned by another live socket (another groupd in this namespace?).
    OwnedByOther(u32),
}

pub fn takeover(head: Option<TableHead>, me: u32) -> Takeover {
    match head {
        None => Takeover::Nothing,
        Some(h) if h.flags & OWNER != 0 => match h.owner {
            Some(port) if port != me => Takeover::OwnedByOther(port),
            _ => Takeover::Nothing,
        },
        Some(h) if h.flags & PERSIST != 0 => Takeover::Claim,
        Some(_) => Takeover::Rebuild,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_follows_the_flags() {
        let head = |flags, owner| Some(TableHead { flags, owner });
        assert_eq!(takeover(None, 7), Takeover::Nothing);
        assert_eq!(takeover(head(OWNED, Some(7)), 7), Takeover::Nothing);
        assert_eq!(takeover(head(OWNED, Some(9)), 7), Takeover::OwnedByOther(9));
        assert_eq!(takeover(head(PERSIST, None), 7), Takeover::Claim);
        assert_eq!(takeover(head(0, None), 7), Takeover::Rebuild);
    }
}
