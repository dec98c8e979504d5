//! Replays every file under `tests/fuzz-regressions/l3` (as from the TUN) and
//! `tests/fuzz-regressions/l2` (as from the TAP) through the every-mode test bed the `cargo fuzz`
//! targets use, with the same invariants: inputs that once crashed the engine (and the seeds
//! written by `write_seed_files`) stay fixed in the plain `cargo test` run.
//!
//! To add a crash: minimise it (`cargo +nightly fuzz tmin engine_l3 <artifact>` in `fuzz/`) and
//! copy the result to `tests/fuzz-regressions/l3/crash-<what>` (or `l2/`).

mod fuzz_seeds;

use std::fs;
use std::path::{Path, PathBuf};

use ulvs_engine::bench_support::testbed::{self, Tally};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(name)
}

fn files(name: &str) -> Vec<PathBuf> {
    let d = dir(name);
    let mut v: Vec<PathBuf> = fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("read {}: {e}", d.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(name: &str, run: fn(&[u8]) -> Tally) {
    let files = files(name);
    assert!(!files.is_empty(), "no regression inputs in {name}/");
    for f in files {
        let input = fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        let t = run(&input);
        assert_eq!(
            t.forwarded + t.answered + t.passed + t.dropped,
            t.packets,
            "{}: {t:?}",
            f.display()
        );
        eprintln!("{}: {t:?}", f.display());
    }
}

#[test]
fn l3_regressions_replay_cleanly() {
    replay("l3", testbed::run_l3);
}

#[test]
fn l2_regressions_replay_cleanly() {
    replay("l2", testbed::run_l2);
}

/// Writes the seed inputs (`seed-*`) of the regression directories. They are not crashes:
/// hand-picked tricky sequences that give the replay test and the fuzzers' corpora a start.
/// Run with `cargo test -p ulvs-engine --test fuzz_replay -- --ignored write_seed_files`.
#[test]
#[ignore = "writes files into the source tree; run by hand to regenerate the seeds"]
fn write_seed_files() {
    for (name, input) in seeds::l3() {
        fs::write(dir("l3").join(name), input).expect("write seed");
    }
    for (name, input) in seeds::l2() {
        fs::write(dir("l2").join(name), input).expect("write seed");
    }
}

/// The seed inputs, each a sequence of records in the test bed's input format.
mod seeds {
    use std::net::Ipv4Addr;

    use etherparse::{Icmpv4Type, Icmpv6Type, icmpv4};
    use ulvs_engine::bench_support::testbed::{
        CLIENT, CLIENT6, LADDR, RS, RS6, TAP_MAC, VIP, VIP6, encode,
    };

    use crate::fuzz_seeds::*;

    /// A `virtio_net_hdr`: flags, GSO type, GSO size, checksum start and offset.
    fn vnet(flags: u8, gso_type: u8, gso_size: u16, csum_start: u16, csum_off: u16) -> Vec<u8> {
        let mut h = vec![flags, gso_type, 0, 0];
        h.extend_from_slice(&gso_size.to_le_bytes());
        h.extend_from_slice(&csum_start.to_le_bytes());
        h.extend_from_slice(&csum_off.to_le_bytes());
        h
    }

    /// `ctl` bit 4: a `virtio_net_hdr` in front.
    const VNET: u8 = 0x10;
    /// `ctl` bit 3: a reaper pass first.
    const EXPIRE: u8 = 0x08;
    /// `ctl` bit 7: swap the configuration first.
    const SWAP: u8 = 0x80;
    /// `ctl` bits 5-6: headroom 0, 24, 60.
    const ROOM0: u8 = 0x20;
    const ROOM24: u8 = 0x40;

    fn seq(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let refs: Vec<(u8, &[u8])> = frames.iter().map(|(c, f)| (*c, &f[..])).collect();
        encode(&refs)
    }

    pub fn l3() -> Vec<(&'static str, Vec<u8>)> {
        let every: Vec<(u8, Vec<u8>)> = super::fuzz_seeds::l3()
            .into_iter()
            .map(|p| (1, p))
            .collect();
        let big = vec![0x42u8; 4000];

        // Super-packets: a TCP one to a tunnel real server (split into segments), absurd GSO
        // sizes (1 and 65535), a GSO type on a non-TCP packet, a partial checksum with offsets
        // past the packet, and a super-packet that starts a connection.
        let mut gso = vec![];
        for port in 40000..40008 {
            gso.push((1, tcp4(CLIENT, port, VIP, 80, SYN, &[])));
        }
        let data = tcp4(CLIENT, 40003, VIP, 80, ACK, &big);
        gso.push((VNET, [vnet(1, 1, 1400, 20, 16), data.clone()].concat()));
        gso.push((VNET, [vnet(1, 1, 1, 20, 16), data[..200].to_vec()].concat()));
        gso.push((VNET, [vnet(0, 0x81, 65535, 0, 0), data.clone()].concat()));
        gso.push((
            VNET,
            [
                vnet(1, 5, 8, 20, 6),
                udp4(CLIENT, 5353, VIP, 53, &big[..300]),
            ]
            .concat(),
        ));
        gso.push((VNET, [vnet(1, 0, 0, 60000, 60000), ping4(VIP)].concat()));
        gso.push((
            VNET,
            [
                vnet(1, 4, 1000, 40, 16),
                tcp6(CLIENT6, 40001, VIP6, 80, ACK, &big),
            ]
            .concat(),
        ));
        gso.push((VNET, vnet(1, 1, 1400, 0, 0)[..7].to_vec()));

        // IPv6 extension chains cut short, and ICMP errors quoting truncated packets.
        let syn6 = tcp6(CLIENT6, 40010, VIP6, 80, SYN, &[]);
        let chain = with_ext6(
            &syn6,
            &[
                (0, padn_ext()),
                (60, padn_ext()),
                (43, {
                    let mut r = vec![0, 0, 0, 0];
                    r.extend_from_slice(&[0; 4]);
                    r
                }),
            ],
        );
        let mut trunc = vec![];
        for cut in [44usize, 47, 48, 55, 56, 63, 64, 70] {
            let mut p = chain[..cut.min(chain.len())].to_vec();
            // The payload length claims the whole chain.
            p[4..6].copy_from_slice(&((chain.len() - 40) as u16).to_be_bytes());
            trunc.push((0, p.clone()));
            let plen = (p.len() - 40) as u16;
            p[4..6].copy_from_slice(&plen.to_be_bytes());
            trunc.push((0, p));
        }
        let conn = tcp4(CLIENT, 40000, VIP, 80, SYN, &[]);
        trunc.insert(0, (1, conn));
        for cut in [0usize, 8, 19, 20, 21, 27, 28] {
            let quoted = tcp4(VIP, 80, CLIENT, 40000, ACK, b"q");
            trunc.push((
                0,
                icmp4_error(
                    RS[0],
                    CLIENT,
                    Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
                    &quoted[..cut],
                ),
            ));
            trunc.push((
                0,
                icmp4_error(
                    CLIENT,
                    VIP,
                    Icmpv4Type::DestinationUnreachable(
                        icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 576 },
                    ),
                    &quoted[..cut],
                ),
            ));
        }
        for cut in [0usize, 39, 40, 41, 48, 60] {
            let q = with_ext6(
                &tcp6(RS6[0], 8080, CLIENT6, 40010, ACK, b"r"),
                &[(0, padn_ext())],
            );
            trunc.push((
                0,
                icmp6_error(
                    RS6[0],
                    CLIENT6,
                    Icmpv6Type::PacketTooBig { mtu: 1280 },
                    &q[..cut.min(q.len())],
                ),
            ));
        }

        // State: connections on every method, a configuration swap, a reaper pass past every
        // timeout, traffic on the stale connections, then a full table.
        let mut state = vec![];
        for port in 41000..41008 {
            state.push((1, tcp4(CLIENT, port, VIP, 80, SYN, &[])));
        }
        state.push((SWAP | 2, tcp4(CLIENT, 41001, VIP, 80, ACK, b"after swap")));
        state.push((SWAP, tcp4(CLIENT, 41002, VIP, 80, SYN, &[])));
        state.push((EXPIRE | 7, tcp4(CLIENT, 41003, VIP, 80, ACK, b"stale")));
        for port in 42000..42060 {
            state.push((0, tcp4(CLIENT, port, VIP, 80, SYN, &[])));
        }
        state.push((ROOM0, tcp4(CLIENT, 43000, VIP, 80, SYN, &[])));
        state.push((ROOM24, tcp4(CLIENT, 41003, VIP, 80, ACK, &big[..1300])));
        state.push((0, ping4(LADDR)));
        state.push((0, tcp4(Ipv4Addr::new(198, 19, 0, 99), 1, VIP, 1, SYN, &[])));

        vec![
            ("seed-every-mode", seq(&every)),
            ("seed-gso-and-partial-checksums", seq(&gso)),
            ("seed-truncated-chains-and-quotes", seq(&trunc)),
            ("seed-swap-expire-fill-headroom", seq(&state)),
        ]
    }

    pub fn l2() -> Vec<(&'static str, Vec<u8>)> {
        let every: Vec<(u8, Vec<u8>)> = super::fuzz_seeds::l2()
            .into_iter()
            .map(|p| (1, p))
            .collect();
        let mut odd = vec![];
        let arp = arp_request(VIP);
        for cut in [0usize, 13, 14, 20, 41] {
            odd.push((0, arp[..cut].to_vec()));
        }
        let ns = neighbour_solicit(VIP6);
        for cut in [60usize, 77, 78, 85, 86] {
            odd.push((0, ns[..cut.min(ns.len())].to_vec()));
        }
        // An NS whose option has length 0, and one from the unspecified address (DAD).
        let mut zero = ns.clone();
        zero[14 + 40 + 24 + 1] = 0;
        odd.push((0, zero));
        let mut dad = ns.clone();
        dad[14 + 8..14 + 24].fill(0);
        odd.push((0, dad));
        // IP in a broadcast frame, to another MAC, and with headroom too small for the reply.
        let syn = tcp4(CLIENT, 44000, VIP, 80, SYN, &[]);
        odd.push((1, eth([0xff; 6], CLIENT_MAC, 0x0800, &syn)));
        odd.push((1, eth([2, 0, 0, 0, 0, 0x99], CLIENT_MAC, 0x0800, &syn)));
        odd.push((ROOM0, to_tap(&syn)));
        odd.push((
            ROOM0,
            to_tap(&tcp4(CLIENT, 44000, VIP, 80, ACK, &vec![1u8; 1400])),
        ));
        odd.push((ROOM0, eth(TAP_MAC, CLIENT_MAC, 0x86dd, &ping6(VIP6))));
        vec![
            ("seed-every-mode", seq(&every)),
            ("seed-truncated-arp-ndp-headroom", seq(&odd)),
        ]
    }
}
