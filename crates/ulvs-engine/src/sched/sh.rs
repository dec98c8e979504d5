//! Source hashing (`sh`): a static 256-bucket table from the client address (and port).

use super::{Ctx, Flow, Scheduler, addr_fold, available, hash_32, name, unavailable_reason};
use crate::config::SchedFlags;
use crate::snapshot::Dest;

/// Bits of the sh table (kernel `CONFIG_IP_VS_SH_TAB_BITS`).
const BITS: u32 = 8;
const SIZE: usize = 1 << BITS;
const NONE: u16 = u16::MAX;

/// Source hashing, as `ip_vs_sh.c`. The 256 buckets are filled with the real servers in order,
/// each taking `weight` consecutive buckets (a weight-0 server one), round after round. A client
/// maps to bucket `hash_32(port + address)`, where port is the client port with `sh-port` and 0
/// otherwise. If that real server is quiescent or overloaded the connection gets none, unless
/// `sh-fallback` is set: then buckets `offset + hash_32(..)` are tried for offsets from the
/// original bucket onwards, around the table.
#[derive(Debug)]
pub(crate) struct SourceHash {
    table: Box<[u16; SIZE]>,
    fallback: bool,
    port: bool,
}

/// The bucket of `(addr, port)` at `offset`.
fn bucket(addr: u32, port: u16, offset: u32) -> usize {
    (offset.wrapping_add(hash_32(u32::from(port).wrapping_add(addr), BITS)) as usize) & (SIZE - 1)
}

impl SourceHash {
    pub(crate) fn new(dests: &[Dest], flags: SchedFlags) -> Self {
        let mut table = Box::new([NONE; SIZE]);
        if !dests.is_empty() {
            let (mut p, mut count) = (0usize, 0u32);
            for slot in table.iter_mut() {
                *slot = p as u16;
                count += 1;
                if count >= dests[p].weight {
                    p = (p + 1) % dests.len();
                    count = 0;
                }
            }
        }
        SourceHash {
            table,
            fallback: flags.contains(SchedFlags::FLAG_1),
            port: flags.contains(SchedFlags::FLAG_2),
        }
    }
}

impl Scheduler for SourceHash {
    fn schedule(&self, dests: &[Dest], flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let port = if self.port { flow.src_port } else { 0 };
        let addr = addr_fold(flow.src);
        let ihash = bucket(addr, port, 0);
        let Some(d) = dests.get(usize::from(self.table[ihash])) else {
            ctx.note(|| "sh: the service has no real servers".to_owned());
            return None;
        };
        // Only formatted when explaining: the packet path must not allocate.
        let key = || {
            if self.port {
                format!("{}:{}", flow.src, flow.src_port)
            } else {
                flow.src.to_string()
            }
        };
        if available(d) {
            ctx.note(|| format!("sh: source {} hashes to bucket {ihash}: {}", key(), name(d)));
            return Some(usize::from(self.table[ihash]));
        }
        ctx.note(|| {
            format!(
                "sh: source {} hashes to bucket {ihash}: {}, which is {}",
                key(),
                name(d),
                unavailable_reason(d)
            )
        });
        if !self.fallback {
            ctx.note(|| "sh: no sh-fallback flag: no real server".to_owned());
            return None;
        }
        for offset in 0..SIZE as u32 {
            let roffset = (offset + ihash as u32) % SIZE as u32;
            let b = bucket(addr, port, roffset);
            let i = usize::from(self.table[b]);
            if available(&dests[i]) {
                ctx.note(|| {
                    format!(
                        "sh: sh-fallback: offset {roffset} gives bucket {b}: {}",
                        name(&dests[i])
                    )
                });
                return Some(i);
            }
        }
        ctx.note(|| "sh: sh-fallback found no available real server".to_owned());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn table_honours_weights() {
        let d = dests(&[(2, 0, 0), (0, 0, 0), (1, 0, 0)]);
        let s = SourceHash::new(&d, SchedFlags::default());
        assert_eq!(&s.table[..8], &[0, 0, 1, 2, 0, 0, 1, 2]);
    }

    #[test]
    fn hash_and_fallback() {
        let d = dests(&[(1, 0, 0), (1, 0, 0)]);
        let f = flow([198, 18, 0, 2], 4000);
        let b = bucket(0xc612_0002, 0, 0);
        let plain = SourceHash::new(&d, SchedFlags::default());
        assert_eq!(pick(&plain, &d, &f), Some(b % 2));
        // With sh-port the client port takes part.
        let with_port = SourceHash::new(&d, SchedFlags::FLAG_2);
        assert_eq!(
            pick(&with_port, &d, &f),
            Some(bucket(0xc612_0002, 4000, 0) % 2)
        );
        // The hashed server goes quiescent: none without fallback, the other one with it.
        let mut q = dests(&[(1, 0, 0), (1, 0, 0)]);
        q[b % 2].weight = 0;
        let plain = SourceHash::new(&d, SchedFlags::default());
        assert_eq!(pick(&plain, &q, &f), None);
        let fb = SourceHash::new(&d, SchedFlags::FLAG_1);
        assert_eq!(pick(&fb, &q, &f), Some(1 - b % 2));
    }
}
