//! Runs the dataplane without the control plane, for manual checks inside a network namespace:
//! `dataplane_smoke TUN PROTO VIP:PORT RS:PORT [RS:PORT...]` creates the TUN, installs the
//! routes and rules for one NAT service, forwards until stdin closes, then cleans up.
//! `QUEUES=N` sets the number of TUN queues.

use std::io::Read;
use std::sync::Arc;

use ulvs_dataplane::{Clock, Router, RouterOptions, TunConfig, TunDevice, Workers};
use ulvs_engine::{
    Config, DestConfig, Engine, EngineOptions, ForwardMethod, Protocol, ServiceConfig, ServiceKey,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err("usage: dataplane_smoke TUN tcp|udp VIP:PORT RS:PORT...".into());
    }
    let protocol = if args[1] == "udp" {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    let mut svc = ServiceConfig::new(ServiceKey {
        protocol,
        addr: args[2].parse()?,
    });
    for rs in &args[3..] {
        svc.dests.push(DestConfig {
            addr: rs.parse()?,
            forward: ForwardMethod::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Default::default(),
        });
    }
    let cfg = Config {
        services: vec![svc],
    };
    let engine = Arc::new(Engine::new(EngineOptions::default()));
    engine.apply_config(&cfg)?;
    let tun = TunDevice::open(&TunConfig {
        name: args[0].clone(),
        queues: std::env::var("QUEUES")
            .ok()
            .and_then(|q| q.parse().ok())
            .unwrap_or(1),
        ..TunConfig::default()
    })?;
    let router = Router::connect(RouterOptions::new(tun.name(), tun.index()))?;
    println!("stale removed: {}", router.remove_stale().await?);
    router.sync(&cfg).await?;
    for e in router.installed().await {
        println!("installed {e}");
    }
    let mut workers = Workers::start(engine.clone(), tun.clone_queues()?, Clock::start())?;
    println!("ready");
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    workers.stop()?;
    println!("queue stats {:?}", workers.queue_stats());
    println!("engine stats {:?}", engine.stats());
    router.clear().await?;
    println!("cleared");
    Ok(())
}
