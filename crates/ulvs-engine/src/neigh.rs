//! The engine's neighbour table: link-layer addresses of direct-routing real servers, learned
//! from ARP (IPv4) and NDP (IPv6) and refreshed on a timer.
//!
//! The engine resolves real servers itself (the kernel's neighbour table of the TAP's bridge is
//! not ours to read on the packet path). [`Engine::neighbour_requests`](crate::Engine) walks the
//! configured direct-routing real servers on a timer and emits an ARP request or NDP neighbour
//! solicitation for each one that is unknown or due for a refresh; replies are learned by
//! `process_frame`. An entry not confirmed for [`EXPIRE_MS`] is no longer used, and a packet for
//! a real server without a usable entry is a counted drop (`DropReason::Unresolved`).

use std::net::IpAddr;

use dashmap::DashMap;

use crate::Timestamp;

/// An entry older than this is refreshed (a new request is sent while it is still used).
pub const REFRESH_MS: u64 = 15_000;
/// An entry not confirmed for this long is no longer used.
pub const EXPIRE_MS: u64 = 60_000;
/// Requests for one address are sent at most this often.
pub const RETRY_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Option<[u8; 6]>,
    confirmed: u64,
    requested: Option<u64>,
}

/// The table: address -> link-layer address, with the times of the last confirmation and the
/// last request.
#[derive(Debug, Default)]
pub(crate) struct NeighTable {
    map: DashMap<IpAddr, Entry, foldhash::fast::FixedState>,
}

impl NeighTable {
    /// The link-layer address of `ip`, if known and confirmed within [`EXPIRE_MS`].
    pub(crate) fn lookup(&self, ip: IpAddr, now: Timestamp) -> Option<[u8; 6]> {
        let e = self.map.get(&ip)?;
        if now.0.saturating_sub(e.confirmed) >= EXPIRE_MS {
            return None;
        }
        e.mac
    }

    /// Records that `ip` is at `mac` (from an ARP or NDP message), if `ip` is an address the
    /// caller resolves.
    pub(crate) fn learn(&self, ip: IpAddr, mac: [u8; 6], now: Timestamp) {
        self.map
            .entry(ip)
            .and_modify(|e| {
                e.mac = Some(mac);
                e.confirmed = now.0;
            })
            .or_insert(Entry {
                mac: Some(mac),
                confirmed: now.0,
                requested: None,
            });
    }

    /// Whether a request for `ip` is due at `now` (unknown, stale, or expiring, and no request
    /// in the last [`RETRY_MS`]); if so, notes the request.
    pub(crate) fn request_due(&self, ip: IpAddr, now: Timestamp) -> bool {
        let mut e = self.map.entry(ip).or_insert(Entry {
            mac: None,
            confirmed: 0,
            requested: None,
        });
        let fresh = e.mac.is_some() && now.0.saturating_sub(e.confirmed) < REFRESH_MS;
        let recent = e
            .requested
            .is_some_and(|t| now.0.saturating_sub(t) < RETRY_MS);
        if fresh || recent {
            return false;
        }
        e.requested = Some(now.0);
        true
    }

    /// Removes entries for addresses `keep` rejects.
    pub(crate) fn retain(&self, keep: impl Fn(&IpAddr) -> bool) {
        self.map.retain(|ip, _| keep(ip));
    }

    /// Every usable entry, for listing.
    pub(crate) fn entries(&self, now: Timestamp) -> Vec<(IpAddr, [u8; 6])> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter_map(|e| {
                let mac = e.mac?;
                (now.0.saturating_sub(e.confirmed) < EXPIRE_MS).then_some((*e.key(), mac))
            })
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_expire_and_request_pacing() {
        let t = NeighTable::default();
        let ip: IpAddr = "198.18.1.11".parse().unwrap();
        assert!(t.request_due(ip, Timestamp(0)));
        assert!(!t.request_due(ip, Timestamp(500)));
        assert!(t.request_due(ip, Timestamp(1000)));
        assert_eq!(t.lookup(ip, Timestamp(1000)), None);
        t.learn(ip, [2, 0, 0, 0, 0, 1], Timestamp(1200));
        assert_eq!(t.lookup(ip, Timestamp(1300)), Some([2, 0, 0, 0, 0, 1]));
        assert!(!t.request_due(ip, Timestamp(1300)));
        // Refresh is due before expiry; the entry is still used meanwhile.
        assert!(t.request_due(ip, Timestamp(1200 + REFRESH_MS)));
        assert!(t.lookup(ip, Timestamp(1200 + REFRESH_MS)).is_some());
        assert_eq!(t.lookup(ip, Timestamp(1200 + EXPIRE_MS)), None);
        assert!(t.entries(Timestamp(1200 + EXPIRE_MS)).is_empty());
    }
}
