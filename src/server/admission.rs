//! Who gets a connection slot: each listener has its own pool (`[limits]
//! max_connections`), so a flood on the inbound listener cannot lock internal MTAs out
//! of the outbound one, and within a listener one client may hold only
//! `max_connections_per_client` of them (Postfix's anvil,
//! `smtpd_client_connection_count_limit`), so one address cannot take them all.
//!
//! A client is an IPv4 address, or the /64 of an IPv6 address: a single IPv6 host
//! usually has a whole /64 to pick addresses from.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One listener's connection slots and who holds them.
pub struct Admission {
    /// The listener's slots.
    slots: Arc<Semaphore>,
    /// Most connections one client may hold at once.
    per_client: usize,
    /// Connections held, per client.
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot of the listener is taken.
    ListenerFull,
    /// This client holds its share already.
    ClientFull,
}

/// A connection's slot; dropping it frees the slot.
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    client: IpAddr,
    admission: Arc<Admission>,
}

impl Admission {
    pub fn new(max_connections: usize, per_client: usize) -> Arc<Admission> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_client,
            held: Mutex::default(),
        })
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let client = client_of(ip);
        let mut held = self.held.lock().expect("not poisoned");
        let count = held.entry(client).or_insert(0);
        if *count >= self.per_client {
            return Err(Refusal::ClientFull);
        }
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::ListenerFull)?;
        *count += 1;
        Ok(Ticket {
            _permit: permit,
            client,
            admission: self.clone(),
        })
    }

    /// Connections `ip`'s client holds now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().expect("not poisoned");
        held.get(&client_of(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self.admission.held.lock().expect("not poisoned");
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// The client an address belongs to: itself for IPv4 (an IPv4-mapped IPv6 address is
/// IPv4), its /64 for IPv6.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_share_and_the_listener_its_total() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some(Refusal::ClientFull));
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).err(), Some(Refusal::ListenerFull));
        // A slot comes back with its ticket, for the client and the listener.
        drop(first);
        assert_eq!(admission.held_by(a), 1);
        let _again = admission.admit(a).unwrap();
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let admission = Admission::new(10, 1);
        let _one = admission.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            admission.admit("2001:db8::ffff:2".parse().unwrap()).err(),
            Some(Refusal::ClientFull)
        );
        assert!(admission.admit("2001:db8:0:1::1".parse().unwrap()).is_ok());
        let _v4 = admission
            .admit("::ffff:192.0.2.7".parse().unwrap())
            .unwrap();
        assert_eq!(
            admission.admit("192.0.2.7".parse().unwrap()).err(),
            Some(Refusal::ClientFull)
        );
    }
}
