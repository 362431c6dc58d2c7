//! When each internal user last had mail through the gateway, for the renewal job's
//! rule that an inactive user is not re-certified.
//!
//! Recorded on the mail path, so it is cheap: only internal users the gateway holds a
//! key for (so that mail to made-up addresses cannot grow the store), and at most one
//! write per user per hour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use super::OrgStore;
use crate::keys::KeyStore;
use crate::mail::InternalDomains;

/// How often one user's activity is written, at most.
const RESOLUTION: time::Duration = time::Duration::hours(1);
/// The most users remembered between writes; past it the memory starts over.
const REMEMBERED: usize = 100_000;

pub struct Activity {
    store: OrgStore,
    keys: Arc<dyn KeyStore>,
    internal: InternalDomains,
    written: Mutex<HashMap<String, OffsetDateTime>>,
}

impl Activity {
    pub fn new(store: OrgStore, keys: Arc<dyn KeyStore>, internal: InternalDomains) -> Activity {
        Activity {
            store,
            keys,
            internal,
            written: Mutex::default(),
        }
    }

    /// Records mail at `now` for each of `addresses` that is an internal user with a key.
    pub fn record<'a>(&self, addresses: impl IntoIterator<Item = &'a str>, now: OffsetDateTime) {
        for address in addresses {
            let Some(address) = crate::keys::address::normalize(address) else {
                continue;
            };
            if !self.internal.is_internal(&address) {
                continue;
            }
            {
                let mut written = self.written.lock().expect("activity lock");
                if written
                    .get(&address)
                    .is_some_and(|&at| now - at < RESOLUTION)
                {
                    continue;
                }
                if written.len() >= REMEMBERED {
                    written.clear();
                }
                written.insert(address.clone(), now);
            }
            match self.keys.find(&address) {
                Ok(entries) if entries.is_empty() => {}
                Ok(_) => {
                    if let Err(e) = self.store.touch(&address, now) {
                        tracing::warn!(%address, error = %e, "cannot record the user's activity");
                    }
                }
                Err(e) => tracing::warn!(%address, error = %e, "cannot record the user's activity"),
            }
        }
    }
}
