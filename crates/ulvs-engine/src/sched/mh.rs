//! Maglev hashing (`mh`): a prime-sized lookup table filled from per-server permutations.

use super::{Ctx, Flow, Scheduler, addr_fold, available, name, unavailable_reason};
use crate::config::SchedFlags;
use crate::snapshot::Dest;

/// Size of the lookup table: a prime (the kernel's default `CONFIG_IP_VS_MH_TAB_INDEX` 12
/// selects 4093).
pub(crate) const TABLE_SIZE: usize = 4093;
/// Bits of weight/gcd that fit before weights are shifted down (kernel `IP_VS_MH_TAB_BITS`).
const TAB_BITS: u32 = 6;
const NONE: u16 = u16::MAX;

/// Hash keys of the two hash functions (offset and skip of a real server's permutation).
const KEY1: u32 = 0x9e37_79b1;
const KEY2: u32 = 0x85eb_ca77;

/// A keyed 32-bit mixer (murmur3's finaliser over the value xored with a key).
fn mix(v: u32, key: u32) -> u32 {
    let mut h = v ^ key;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h.wrapping_add(key.rotate_left(7)) ^ (h >> 11)
}

/// The kernel's key: `offset + port + folded address`, hashed with `key`.
fn hashkey(addr: u32, port: u16, key: u32, offset: u32) -> u32 {
    mix(offset.wrapping_add(u32::from(port)).wrapping_add(addr), key)
}

/// Maglev hashing, as `ip_vs_mh.c` (after Eisenbud et al., NSDI 2016, section 3.4). Each real
/// server has a permutation of the table positions (`offset`, `skip` from two hashes of its
/// address and port); servers take turns claiming their next free preferred position, each
/// claiming `last_weight / gcd` positions per turn (shifted right so the largest fits in 6
/// bits), until the table is full. A client maps to position `hash(address [+ port]) % size`.
///
/// Real servers with weight 0 keep the positions of their last non-zero weight (the kernel's
/// `last_weight`), so quiescing one moves no other client; a lookup that lands on an unavailable
/// server gives none, unless `mh-fallback` is set: then positions `hash(.., offset)` are tried
/// from the original position onwards. `mh-port` adds the client port to the hash.
#[derive(Debug)]
pub(crate) struct Maglev {
    table: Box<[u16]>,
    fallback: bool,
    port: bool,
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Kernel `fls`: the position of the highest set bit, 1-based (0 for 0).
fn fls(v: u32) -> u32 {
    32 - v.leading_zeros()
}

impl Maglev {
    pub(crate) fn new(dests: &[Dest], flags: SchedFlags) -> Self {
        Maglev {
            table: populate(dests),
            fallback: flags.contains(SchedFlags::FLAG_1),
            port: flags.contains(SchedFlags::FLAG_2),
        }
    }

    /// How many positions real server `i` owns (for tests).
    #[cfg(test)]
    pub(crate) fn share(&self, i: usize) -> usize {
        self.table.iter().filter(|&&s| usize::from(s) == i).count()
    }
}

/// Builds the lookup table (off the packet path, when a snapshot is built).
fn populate(dests: &[Dest]) -> Box<[u16]> {
    let mut table = vec![NONE; TABLE_SIZE].into_boxed_slice();
    let g = dests
        .iter()
        .map(|d| d.last_weight)
        .filter(|&w| w > 0)
        .reduce(gcd)
        .unwrap_or(0);
    if g == 0 {
        return table;
    }
    let max = dests.iter().map(|d| d.last_weight).max().unwrap_or(0) / g;
    let rshift = fls(max).saturating_sub(TAB_BITS);
    let m = TABLE_SIZE as u32;
    struct Setup {
        perm: u32,
        skip: u32,
        turns: u32,
    }
    let mut setup: Vec<Setup> = dests
        .iter()
        .map(|d| {
            let a = addr_fold(d.addr.ip());
            let offset = hashkey(a, d.addr.port(), KEY1, 0) % m;
            let skip = hashkey(a, d.addr.port(), KEY2, 0) % (m - 1) + 1;
            let lw = d.last_weight;
            let t = (lw / g) >> rshift;
            Setup {
                perm: offset,
                skip,
                turns: if t == 0 { u32::from(lw != 0) } else { t },
            }
        })
        .collect();
    let mut taken = vec![false; TABLE_SIZE];
    let mut n = 0;
    let mut dt_count = 0;
    'fill: loop {
        let mut p = 0;
        while p < setup.len() {
            let s = &mut setup[p];
            if s.turns < 1 {
                p += 1;
                continue;
            }
            while taken[s.perm as usize] {
                s.perm += s.skip;
                if s.perm >= m {
                    s.perm -= m;
                }
            }
            taken[s.perm as usize] = true;
            table[s.perm as usize] = p as u16;
            n += 1;
            if n == TABLE_SIZE {
                break 'fill;
            }
            dt_count += 1;
            if dt_count >= s.turns {
                dt_count = 0;
                p += 1;
            }
        }
    }
    table
}

impl Scheduler for Maglev {
    fn schedule(&self, dests: &[Dest], flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let m = TABLE_SIZE as u32;
        let port = if self.port { flow.src_port } else { 0 };
        let addr = addr_fold(flow.src);
        let ihash = (hashkey(addr, port, KEY1, 0) % m) as usize;
        // Only formatted when explaining: the packet path must not allocate.
        let key = || {
            if self.port {
                format!("{}:{}", flow.src, flow.src_port)
            } else {
                flow.src.to_string()
            }
        };
        let Some(d) = dests.get(usize::from(self.table[ihash])) else {
            ctx.note(|| {
                format!(
                    "mh: source {} maps to position {ihash}, which no real server owns",
                    key()
                )
            });
            return None;
        };
        if available(d) {
            ctx.note(|| {
                format!(
                    "mh: source {} maps to position {ihash} of {TABLE_SIZE}: {}",
                    key(),
                    name(d)
                )
            });
            return Some(usize::from(self.table[ihash]));
        }
        ctx.note(|| {
            format!(
                "mh: source {} maps to position {ihash}: {}, which is {}",
                key(),
                name(d),
                unavailable_reason(d)
            )
        });
        if !self.fallback {
            ctx.note(|| "mh: no mh-fallback flag: no real server".to_owned());
            return None;
        }
        for offset in 0..m {
            let roffset = (offset + ihash as u32) % m;
            let h = (hashkey(addr, port, KEY1, roffset) % m) as usize;
            let Some(d) = dests.get(usize::from(self.table[h])) else {
                break;
            };
            if available(d) {
                ctx.note(|| {
                    format!(
                        "mh: mh-fallback: offset {roffset} gives position {h}: {}",
                        name(d)
                    )
                });
                return Some(usize::from(self.table[h]));
            }
        }
        ctx.note(|| "mh: mh-fallback found no available real server".to_owned());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn table_is_full_and_weighted() {
        let d = dests(&[(1, 0, 0), (2, 0, 0), (1, 0, 0)]);
        let s = Maglev::new(&d, SchedFlags::default());
        assert!(s.table.iter().all(|&x| x != NONE));
        let shares: Vec<usize> = (0..3).map(|i| s.share(i)).collect();
        assert_eq!(shares.iter().sum::<usize>(), TABLE_SIZE);
        // Turns 1:2:1 claim positions in that ratio until the table is full.
        assert!(
            (shares[1] as i64 - 2 * shares[0] as i64).abs() <= 2,
            "{shares:?}"
        );
        assert!(
            (shares[0] as i64 - shares[2] as i64).abs() <= 1,
            "{shares:?}"
        );
    }

    #[test]
    fn big_weights_are_shifted() {
        // 1000/1 needs 10 bits: shifted right by 4 -> 62 turns vs 1 (1 >> 4 = 0 -> at least 1).
        let d = dests(&[(1000, 0, 0), (1, 0, 0)]);
        let s = Maglev::new(&d, SchedFlags::default());
        assert_eq!(s.share(0) + s.share(1), TABLE_SIZE);
        let ratio = s.share(0) as f64 / s.share(1) as f64;
        assert!((55.0..70.0).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn quiescent_keeps_its_positions_and_fallback_moves_only_its_clients() {
        let d = dests(&[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
        let s = Maglev::new(&d, SchedFlags::FLAG_1);
        let mut q = dests(&[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
        q[1].weight = 0; // last_weight stays 1: the table is the same.
        let sq = Maglev::new(&q, SchedFlags::FLAG_1);
        assert_eq!(s.table, sq.table);
        for c in 0..200u16 {
            let f = flow([10, 9, (c >> 8) as u8, c as u8], 1);
            let before = pick(&s, &d, &f).unwrap();
            let after = pick(&sq, &q, &f).unwrap();
            if before != 1 {
                assert_eq!(before, after);
            } else {
                assert_ne!(after, 1);
            }
        }
        // Without fallback the quiescent server's clients get none.
        let plain = Maglev::new(&q, SchedFlags::default());
        let lost = (0..200u16)
            .filter(|c| pick(&plain, &q, &flow([10, 9, (c >> 8) as u8, *c as u8], 1)).is_none())
            .count();
        assert!(lost > 30 && lost < 110, "lost {lost}");
    }
}
