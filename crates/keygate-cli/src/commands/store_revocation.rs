//! With `[store]` configured, `key revoke`, `user remove` and `key rotate --grace 0s` also
//! write the revocation to the store once the file edit has succeeded, so replicas reading
//! other copies of the file refuse the credential within a second (docs/scale-out.md).

use std::path::Path;

use keygate::error::chain;
use keygate_server::store::PendingRevocation;
use keygate_server::store::principals::PendingRevocationError;
use time::OffsetDateTime;

use super::Unavailable;

/// Reads what the revocation of `id` needs from the file before it is edited: `None`
/// without a store. A file that does not load is edited anyway, with a warning.
pub(crate) fn prepare(path: &Path, id: &str) -> Prepared {
    match PendingRevocation::prepare(path, id) {
        Ok(pending) => Prepared::Ready(pending),
        // Said only once the edit has been made: an edit refused for the same reason
        // already says why, in one line.
        Err(e) => Prepared::Unreadable(e),
    }
}

/// What [`prepare`] found.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// The revocation to write (none without a store).
    Ready(Option<PendingRevocation>),
    /// The configuration could not be read for it.
    Unreadable(PendingRevocationError),
}

/// Writes the prepared revocation, effective from `at`.
pub(crate) fn publish(prepared: Prepared, at: OffsetDateTime) -> anyhow::Result<()> {
    let pending = match prepared {
        Prepared::Ready(Some(pending)) => pending,
        Prepared::Ready(None) => return Ok(()),
        Prepared::Unreadable(e) => {
            eprintln!(
                "keygate: warning: {}; the revocation is written to the file only, not to the store",
                chain(&e)
            );
            return Ok(());
        }
    };
    pending.publish(at).map_err(|e| {
        anyhow::Error::new(Unavailable(format!(
            "the file is changed, but writing the revocation to the store failed ({}); \
             replicas reading other copies of the file accept the credential until their copy changes",
            chain(&e)
        )))
    })?;
    eprintln!("revocation written to the store: every replica refuses it within a second");
    Ok(())
}
