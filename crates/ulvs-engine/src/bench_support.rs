//! Hooks for the criterion benchmarks (`benches/sched.rs`: one scheduler pick over a set of
//! real servers, without a packet or the connection table around it) and the every-mode test
//! bed of the fuzz targets and proptests ([`testbed`]). Not part of the API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::Timestamp;
use crate::config::{SchedFlags, SchedulerKind};
use crate::sched::{self, Carry, Ctx, Flow, Rng, Scheduler};
use crate::snapshot::Dest;
use crate::stats::DestState;

pub mod testbed;

/// A scheduler over `n` real servers with weights 1..=4 and a few connections each.
#[derive(Debug)]
pub struct SchedulerBench {
    dests: Vec<Dest>,
    scheduler: Box<dyn Scheduler>,
    rng: Rng,
}

impl SchedulerBench {
    /// `kind` over `n` real servers (10.x.y.z:80), weights cycling 1..=4, server `i` holding
    /// `i % 7` active and `i % 5` inactive connections.
    pub fn new(kind: SchedulerKind, n: usize) -> Self {
        let dests: Vec<Dest> = (0..n)
            .map(|i| {
                let state = Arc::new(DestState::new());
                for _ in 0..i % 7 {
                    state.add_conn(true);
                }
                for _ in 0..i % 5 {
                    state.add_conn(false);
                }
                let b = (i as u32).to_be_bytes();
                let w = (i % 4) as u32 + 1;
                Dest {
                    addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, b[1], b[2], b[3])), 80),
                    weight: w,
                    last_weight: w,
                    state,
                    forward: crate::config::ForwardMethod::Masq,
                    pools: Vec::new(),
                }
            })
            .collect();
        let scheduler = sched::build(kind, SchedFlags::default(), &dests, Carry::None);
        SchedulerBench {
            dests,
            scheduler,
            rng: Rng::new(1),
        }
    }

    /// One pick for client number `client` (its address is derived from the number).
    pub fn pick(&self, client: u32) -> Option<usize> {
        let flow = Flow {
            src: IpAddr::V4(Ipv4Addr::from(client.wrapping_mul(2_654_435_761) | 1)),
            src_port: (client & 0xffff) as u16,
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1)),
        };
        self.scheduler
            .schedule(&self.dests, &flow, &mut Ctx::live(Timestamp(0), &self.rng))
    }
}
