//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! NAT rewrites never recompute a whole checksum: they patch it with
//! `HC' = ~(~HC + ~m + m')` for each 16-bit word `m` that changes to `m'` (RFC 1624, eqn. 3).
//! The from-scratch functions are for building packets and for tests.

/// Adds the big-endian 16-bit words of `data` (an odd last byte is padded with zero) to `acc`,
/// without folding. `u64` does not overflow for any buffer that fits in memory.
pub fn sum_words(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// Folds a wide sum to 16 bits with end-around carry.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data`, from scratch: `!fold(sum)`.
pub fn compute(data: &[u8]) -> u16 {
    !fold(sum_words(0, data))
}

/// The IPv4 pseudo-header sum (source, destination, protocol, L4 length), unfolded.
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u32) -> u64 {
    let acc = sum_words(0, &src);
    let acc = sum_words(acc, &dst);
    acc + u64::from(protocol) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff)
}

/// The IPv6 pseudo-header sum (source, destination, upper-layer length, next header), unfolded.
pub fn pseudo_header_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, l4_len: u32) -> u64 {
    let acc = sum_words(0, &src);
    let acc = sum_words(acc, &dst);
    acc + u64::from(next_header) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff)
}

/// An accumulated change of 16-bit words, to patch several checksums with (RFC 1624).
///
/// Each changed field adds `~old + new` for its words; [`Delta::apply`] turns a checksum of the
/// old data into the checksum of the new data. Fields must be 16-bit aligned within the summed
/// data (addresses and ports always are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// Notes that the bytes `old` became `new` (same even length).
    pub fn change(&mut self, old: &[u8], new: &[u8]) {
        for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
            self.change_u16(
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([n[0], n[1]]),
            );
        }
    }

    /// Notes that a 16-bit word changed from `old` to `new` (nothing if it did not change).
    pub fn change_u16(&mut self, old: u16, new: u16) {
        if old != new {
            self.0 += u64::from(!old) + u64::from(new);
        }
    }

    /// Whether no word changed.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The checksum `csum` patched for every noted change.
    pub fn apply(&self, csum: u16) -> u16 {
        !fold(u64::from(!csum) + self.0)
    }

    /// A *partial* checksum field (offload: the folded, non-complemented pseudo-header sum)
    /// patched for every noted change; note only pseudo-header changes for it.
    pub fn apply_partial(&self, sum: u16) -> u16 {
        fold(u64::from(sum) + self.0)
    }
}

/// Patches checksum `csum` for one 16-bit word changing from `old` to `new` (RFC 1624, eqn. 3).
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!csum) + u64::from(!old) + u64::from(new))
}

/// Patches checksum `csum` for a 4-byte field (an IPv4 address) changing from `old` to `new`.
pub fn update_addr4(csum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let w = |a: [u8; 4], i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
    let sum = u64::from(!csum)
        + u64::from(!w(old, 0))
        + u64::from(!w(old, 2))
        + u64::from(w(new, 0))
        + u64::from(w(new, 2));
    !fold(sum)
}

/// Patches a *partial* checksum field (checksum offload: the folded, non-complemented
/// pseudo-header sum, finished later over the L4 bytes) for a pseudo-header field changing from
/// `old` to `new` (same even length: an IPv4 or IPv6 address): `sum' = sum + ~old + new` in
/// ones' complement arithmetic, without the final complement.
pub fn update_partial(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u64::from(sum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u64::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u64::from(u16::from_be_bytes([n[0], n[1]]));
    }
    fold(acc)
}

/// Finishes a partial checksum: the checksum over `l4` (the TCP/UDP header and data whose
/// checksum field holds the partial pseudo-header sum), as the kernel or a NIC would compute it
/// on transmit. For tests and for software segmentation.
pub fn finish_partial(l4: &[u8]) -> u16 {
    !fold(sum_words(0, l4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_matches_recompute() {
        let mut data = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 1, 10,
        ];
        let c0 = compute(&data);
        let old = [198, 18, 1, 10];
        let new = [198, 19, 7, 200];
        data[16..20].copy_from_slice(&new);
        let c1 = compute(&data);
        assert_eq!(update_addr4(c0, old, new), c1);
        let c2 = update_u16(c1, 0x1234, 0xbeef);
        data[4..6].copy_from_slice(&0xbeefu16.to_be_bytes());
        assert_eq!(c2, compute(&data));
    }

    #[test]
    fn partial_update_matches_a_fresh_pseudo_header_sum() {
        let (src, dst, new) = ([198, 18, 0, 2], [198, 18, 100, 1], [198, 18, 1, 11]);
        let partial = fold(pseudo_header_v4(src, dst, 6, 1480));
        let want = fold(pseudo_header_v4(src, new, 6, 1480));
        assert_eq!(update_partial(partial, &dst, &new), want);
        let v6a = [0xfd, 0, 1, 0xb5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let v6b = [0xfd, 0, 1, 0xb5, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd, 0, 2];
        let back = update_partial(update_partial(want, &v6a, &v6b), &v6b, &v6a);
        assert_eq!(back, want);
    }

    #[test]
    fn delta_matches_recompute_for_v6_addresses() {
        let mut data = [0u8; 40];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let c0 = compute(&data);
        let old: [u8; 16] = data[8..24].try_into().unwrap();
        let new = [0xfd, 0, 1, 0xb5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        data[8..24].copy_from_slice(&new);
        data[30..32].copy_from_slice(&0x0050u16.to_be_bytes());
        let mut orig = [0u8; 40];
        for (i, b) in orig.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        assert_eq!(u16::from_be_bytes([orig[30], orig[31]]), 0xd5dc);
        let mut d2 = Delta::default();
        d2.change(&old, &new);
        d2.change_u16(0xd5dc, 0x0050);
        assert_eq!(d2.apply(c0), compute(&data));
        let mut same = Delta::default();
        same.change(&new, &new);
        assert!(same.is_empty());
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_words(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
