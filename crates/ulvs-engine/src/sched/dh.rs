//! Destination hashing (`dh`): a static 256-bucket table from the destination address.

use super::{Ctx, Flow, Scheduler, addr_fold, available, hash_32, name, unavailable_reason};
use crate::snapshot::Dest;

/// Bits of the dh table (kernel `CONFIG_IP_VS_DH_TAB_BITS`).
const BITS: u32 = 8;
const SIZE: usize = 1 << BITS;
const NONE: u16 = u16::MAX;

/// Destination hashing, as `ip_vs_dh.c`: 256 buckets filled with the real servers in turn (each
/// once per round, weights ignored), indexed by `hash_32(destination address)`. A bucket whose
/// real server is quiescent or overloaded gives no server (no fallback).
#[derive(Debug)]
pub(crate) struct DestHash {
    table: Box<[u16; SIZE]>,
}

impl DestHash {
    pub(crate) fn new(dests: &[Dest]) -> Self {
        let mut table = Box::new([NONE; SIZE]);
        if !dests.is_empty() {
            for (b, slot) in table.iter_mut().enumerate() {
                *slot = (b % dests.len()) as u16;
            }
        }
        DestHash { table }
    }
}

impl Scheduler for DestHash {
    fn schedule(&self, dests: &[Dest], flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let bucket = hash_32(addr_fold(flow.dst), BITS) as usize;
        let i = usize::from(self.table[bucket]);
        let Some(d) = dests.get(i) else {
            ctx.note(|| "dh: the service has no real servers".to_owned());
            return None;
        };
        if !available(d) {
            ctx.note(|| {
                format!(
                    "dh: destination {} hashes to bucket {bucket}, {}, which is {}: no fallback",
                    flow.dst,
                    name(d),
                    unavailable_reason(d)
                )
            });
            return None;
        }
        ctx.note(|| {
            format!(
                "dh: destination {} hashes to bucket {bucket}: {}",
                flow.dst,
                name(d)
            )
        });
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn buckets_round_robin_and_hash() {
        let d = dests(&[(1, 0, 0), (5, 0, 0), (1, 0, 0)]);
        let s = DestHash::new(&d);
        assert_eq!(&s.table[..6], &[0, 1, 2, 0, 1, 2]);
        let mut f = flow([1, 1, 1, 1], 1);
        f.dst = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let b = hash_32(0x0a01_0203, 8) as usize;
        assert_eq!(pick(&s, &d, &f), Some(b % 3));
    }
}
