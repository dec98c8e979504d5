//! TUN devices, worker threads and kernel route/rule setup that drive the ulvs engine.
//!
//! This crate holds the privileged code of the daemon (ioctls, netlink, `/proc/sys`):
//! - [`tun`]: creates the TUN device (`IFF_TUN | IFF_NO_PI`, optionally multi-queue, with
//!   `IFF_VNET_HDR` and checksum/segmentation offload by default), sets MTU and `txqueuelen`,
//!   brings it up; one non-blocking descriptor per queue.
//! - [`steer`]: the eBPF program that picks a multi-queue TUN's queue by the packet's flow hash.
//! - [`vnet`]: the `virtio_net_hdr` in front of each packet when offload is on.
//! - [`tap`]: the TAP device of direct routing, attached to the real servers' bridge.
//! - [`worker`]: one blocking thread per queue that runs packets through
//!   [`ulvs_engine::Engine::process`] and writes Forward/Pass verdicts back, an expiry thread
//!   that calls [`ulvs_engine::Engine::expire`] every 100 ms and [`ulvs_engine::Engine::estimate`]
//!   (the rate estimator) every 2 s, and the millisecond clock.
//! - [`icmp_watch`]: raw ICMP/ICMPv6 sockets whose copies of the errors sent to the director's
//!   tunnel source go to [`ulvs_engine::Engine::process_local_icmp`] (relayed to clients).
//! - [`router`]: host routes for the virtual addresses and reply-steering policy rules, kept in
//!   step with the configuration over netlink, removed on exit.
//! - [`redirect`]: `tc` ingress filters on the real servers' interfaces that hand NAT and
//!   FULLNAT replies to the TUN ahead of the routed path (an accelerator over the rules).
//! - [`prereq`]: checks of forwarding, `rp_filter`, CAP_NET_ADMIN and `/dev/net/tun`, and the
//!   optional fix-up of the sysctls.
//!
//! # Invariants
//! - The packet path allocates nothing (one buffer per worker, reused) and logs nothing above
//!   debug.
//! - The router only deletes routes and rules that carry its own protocol id.
//! - Pure parts (desired routes and rules, diffs, `/proc` parsing) are unit-tested without root;
//!   everything that needs a namespace is tested in `integration/`.

pub mod icmp_watch;
pub mod prereq;
pub mod redirect;
pub mod router;
pub mod steer;
pub mod tap;
pub mod tun;
pub mod vnet;
pub mod worker;

pub use icmp_watch::{Families, IcmpWatcher};
pub use prereq::{Host, PrereqError};
pub use redirect::{Redirect, RedirectOptions};
pub use router::{Entry, Plan, Router, RouterError, RouterOptions};
pub use tap::{TapDevice, TapQueue};
pub use tun::{Offloads, TunConfig, TunDevice, TunError, TunQueue};
pub use vnet::VnetHdr;
pub use worker::{Clock, QueueStats, WorkerError, WorkerOptions, Workers};
