//! The admin's changes to single entries (`sealgate spool ...`): made only while no
//! retrier attempts the entry, so that an attempt's result cannot undo them.

use super::Entry;
use super::{Key, Spool, SpoolError};
use crate::mail::message::Message;

impl Spool {
    /// One entry, if it is held.
    pub async fn find(&self, key: Key) -> Result<Option<Entry>, SpoolError> {
        match key {
            Key::Local(id) => Ok(self.storage.local.entry(id)),
            Key::Shared(id) => match &self.storage.shared {
                Some(shared) => shared.entry(id).await,
                None => Ok(None),
            },
        }
    }

    /// The message of an entry.
    pub async fn message_of(&self, key: Key) -> Result<Message, SpoolError> {
        self.message(key).await
    }

    /// The admin's change to one entry, made only while nothing attempts it: `change`
    /// is given the entry and its message as they are now, and says what becomes of
    /// it (a new record, or gone) and the DSN to hold beside, if any.
    pub async fn change(
        &self,
        key: Key,
        change: impl FnOnce(&Entry, &Message) -> Change,
    ) -> Result<Changed, SpoolError> {
        match key {
            Key::Local(id) => {
                let Some((_busy, entry)) = self.claim_local(id) else {
                    return Ok(match self.storage.local.entry(id) {
                        Some(_) => Changed::Busy,
                        None => Changed::Gone,
                    });
                };
                let message = self.storage.local.message(id)?;
                let Change { updated, dsn } = change(&entry, &message);
                match updated {
                    Some(entry) => {
                        self.storage.local.update(id, &entry).await?;
                    }
                    None => self.storage.local.settle(id, None, dsn).await?,
                }
                Ok(Changed::Done)
            }
            Key::Shared(id) => {
                let Some(shared) = &self.storage.shared else {
                    return Ok(Changed::Gone);
                };
                let Some(entry) = shared.entry(id).await? else {
                    return Ok(Changed::Gone);
                };
                let message = shared.message(id).await?;
                let Change { updated, dsn } = change(&entry, &message);
                if shared.change_unclaimed(id, &entry, updated, dsn).await? {
                    Ok(Changed::Done)
                } else if shared.entry(id).await?.is_some() {
                    Ok(Changed::Busy)
                } else {
                    Ok(Changed::Gone)
                }
            }
        }
    }
}

/// What the admin's [`Spool::change`] makes of an entry.
pub struct Change {
    /// The entry's new record, or `None` to remove it.
    pub updated: Option<Entry>,
    /// A DSN to hold in its place (only when it is removed).
    pub dsn: Option<(Entry, Message)>,
}

/// Whether the admin's change was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Done,
    /// The retrier (this gateway's, or a cluster member's) is attempting the entry now.
    Busy,
    /// No such entry (any more).
    Gone,
}
