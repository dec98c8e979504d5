//! Kernel routes and policy rules that steer service traffic into the TUN device, kept in step
//! with the engine configuration over netlink (`rtnetlink`).
//!
//! For a configuration the router installs:
//! - per virtual address, a host route `VIP/32` (or `/128`) `dev <tun>` in table main;
//! - per FULLNAT local address, a host route `LADDR/32` (or `/128`) `dev <tun>` in table main,
//!   so that real servers' replies to it come back into the TUN;
//! - per NAT (masquerading) real server, a policy rule
//!   `from RS/32 iif <dev the RS is reached through> ipproto <proto> sport <port> lookup <table>`
//!   (no `sport` when the real server's port is 0), so that only the real server's service
//!   replies are steered; packets ulvsd writes back arrive with `iif <tun>` and never match;
//! - per interface that NAT real servers are reached through, and per address family of those
//!   real servers, a policy rule `iif <dev> ipproto icmp` (`ipv6-icmp` for IPv6)
//!   `lookup <table>`, so that ICMP errors about a NAT connection reach the engine, which
//!   translates them for the client: the real server's own (port unreachable) and those of any
//!   router between the director and the real server (fragmentation needed / packet too big
//!   because a link on the way is smaller, time exceeded, host unreachable), whose source is
//!   the router's address, so a `from RS` match would miss them. A rule cannot match ICMP
//!   types, so every ICMP message forwarded in through that interface is steered: the engine
//!   hands back the ones that belong to no connection (a real server or router pinging the
//!   client, an echo reply) as [`ulvs_engine::Verdict::Pass`], the worker writes them back into
//!   the TUN unchanged, and the kernel forwards them (they re-enter with `iif <tun>`, so they
//!   do not match again; `rp_filter` is off on the TUN, which the prerequisite check enforces).
//!   Messages to the director's own addresses (pings of the director, errors about its own
//!   packets such as the tunnel hop errors its ICMP watcher reads, IPv6 neighbour discovery,
//!   broadcast and multicast) never reach the rule: the `local` table (priority 0) is looked
//!   up first. Errors about FULLNAT connections need no rule: they are addressed to a local
//!   address, which is routed into the TUN;
//! - per address family that has such a rule, `default dev <tun>` in the ulvs table.
//!
//! On top of these, [`crate::redirect`] puts `tc` ingress filters on the interfaces NAT and
//! FULLNAT real servers are reached through, which hand their plain replies to the TUN before
//! the kernel routes them; the rules and routes above stay, and carry whatever the filters do
//! not match (or everything, where the filters cannot be installed).
//!
//! Every route and rule carries the router's own protocol id ([`RouterOptions::protocol`]), so
//! the router only ever deletes what it installed; [`Router::remove_stale`] removes leftovers of
//! a crashed run by that id. The desired set is a pure function of the configuration and the
//! real servers' interfaces ([`desired_entries`]); [`Plan::between`] diffs two sets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::IpProtocol;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};
use ulvs_engine::{Config, ForwardMethod, Protocol};

use crate::redirect::{self, RedirectOptions, Redirector};

/// Default routing table for steered replies (0x75).
pub const DEFAULT_TABLE: u32 = 0x75;
/// Default priority of the reply-steering policy rules.
pub const DEFAULT_RULE_PRIORITY: u32 = 100;
/// Default protocol id stamped on every route and rule the router installs.
pub const DEFAULT_PROTOCOL: u8 = 0x75;

/// Settings of the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterOptions {
    /// Name of the TUN device.
    pub tun_name: String,
    /// Index of the TUN device.
    pub tun_index: u32,
    /// Routing table the policy rules look up (holds a default route into the TUN).
    pub table: u32,
    /// Priority of the policy rules.
    pub rule_priority: u32,
    /// Protocol id of our routes and rules (`proto` in `ip route`/`ip rule`).
    pub protocol: u8,
    /// The `tc` filters that hand real servers' replies to the TUN ahead of the routed path.
    pub redirect: RedirectOptions,
}

impl RouterOptions {
    /// Options with the defaults for a TUN device.
    pub fn new(tun_name: impl Into<String>, tun_index: u32) -> Self {
        RouterOptions {
            tun_name: tun_name.into(),
            tun_index,
            table: DEFAULT_TABLE,
            rule_priority: DEFAULT_RULE_PRIORITY,
            protocol: DEFAULT_PROTOCOL,
            redirect: RedirectOptions::default(),
        }
    }
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A policy rule that steers a real server's replies into the TUN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyRule {
    /// The real server's address (matched as a host prefix).
    pub source: IpAddr,
    /// The interface the real server is reached through.
    pub iif: String,
    /// The service's transport protocol.
    pub protocol: Protocol,
    /// The real server's port, if not 0.
    pub sport: Option<u16>,
}

/// A policy rule that steers the ICMP messages forwarded in through an interface that NAT real
/// servers are reached through into the TUN: `iif <dev> ipproto icmp` (or `ipv6-icmp`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IcmpRule {
    /// The address family (ICMP for IPv4, ICMPv6 for IPv6).
    pub family: Family,
    /// The interface the real servers are reached through.
    pub iif: String,
}

impl IcmpRule {
    /// ICMP for IPv4, ICMPv6 for IPv6.
    fn ip_protocol(&self) -> u8 {
        match self.family {
            Family::V4 => 1,
            Family::V6 => 58,
        }
    }
}

/// One kernel object the router manages. The order of the variants is the install order
/// (removal goes in reverse): the reply path before the VIP routes that attract traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// `default dev <tun>` in the ulvs table.
    TableDefault(Family),
    /// A reply-steering policy rule.
    Rule(ReplyRule),
    /// An ICMP-steering policy rule for an interface NAT real servers are reached through:
    /// `iif <dev> ipproto icmp` (or `ipv6-icmp`).
    IcmpRule(IcmpRule),
    /// `LADDR/32` (or `/128`) `dev <tun>` in table main: a FULLNAT local address (reply path,
    /// so installed before the VIP routes).
    LocalRoute(IpAddr),
    /// `VIP/32` (or `/128`) `dev <tun>` in table main.
    VipRoute(IpAddr),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::TableDefault(Family::V4) => f.write_str("route 0.0.0.0/0 in the ulvs table"),
            Entry::TableDefault(Family::V6) => f.write_str("route ::/0 in the ulvs table"),
            Entry::Rule(r) => {
                let len = if r.source.is_ipv4() { 32 } else { 128 };
                write!(
                    f,
                    "rule from {}/{len} iif {} ipproto {}",
                    r.source,
                    r.iif,
                    r.protocol.to_string().to_lowercase()
                )?;
                if let Some(p) = r.sport {
                    write!(f, " sport {p}")?;
                }
                Ok(())
            }
            Entry::IcmpRule(r) => {
                let proto = match r.family {
                    Family::V4 => "icmp",
                    Family::V6 => "ipv6-icmp",
                };
                write!(f, "rule iif {} ipproto {proto}", r.iif)
            }
            Entry::VipRoute(ip) | Entry::LocalRoute(ip) => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                write!(f, "route {ip}/{len}")
            }
        }
    }
}

/// Why the router could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// Opening the netlink socket failed.
    #[error("open netlink socket: {0}")]
    Connect(std::io::Error),
    /// No interface is known for a NAT real server (no route to it).
    #[error("no route to real server {0}")]
    NoRoute(IpAddr),
    /// A NAT real server is reached through the TUN itself, which would loop.
    #[error(
        "real server {0} is routed through the TUN device {1}; it must be reached through another interface"
    )]
    RoutedThroughTun(IpAddr, String),
    /// A netlink request failed.
    #[error("{operation}: {source}")]
    Netlink {
        /// What was being done, e.g. "add route 198.18.100.1/32".
        operation: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
}

impl RouterError {
    /// What was being done when the error happened (for `BackendError::operation`).
    pub fn operation(&self) -> String {
        match self {
            RouterError::Netlink { operation, .. } => operation.clone(),
            RouterError::Connect(_) => "open netlink socket".to_owned(),
            RouterError::NoRoute(ip) | RouterError::RoutedThroughTun(ip, _) => {
                format!("find the interface of real server {ip}")
            }
        }
    }
}

/// The entries a configuration needs. `ifaces` maps each NAT real server's address to the
/// interface it is reached through; a missing one is [`RouterError::NoRoute`].
pub fn desired_entries(
    cfg: &Config,
    ifaces: &BTreeMap<IpAddr, String>,
) -> Result<BTreeSet<Entry>, RouterError> {
    let mut out = BTreeSet::new();
    for svc in &cfg.services {
        out.insert(Entry::VipRoute(svc.key.addr.ip()));
        for &l in &svc.local_addresses {
            // The engine refuses a local address that is also a virtual address.
            out.insert(Entry::LocalRoute(l));
        }
        for d in svc
            .dests
            .iter()
            .filter(|d| d.forward == ForwardMethod::Masq)
        {
            let ip = d.addr.ip();
            let iif = ifaces.get(&ip).ok_or(RouterError::NoRoute(ip))?;
            out.insert(Entry::TableDefault(Family::of(ip)));
            out.insert(Entry::IcmpRule(IcmpRule {
                family: Family::of(ip),
                iif: iif.clone(),
            }));
            out.insert(Entry::Rule(ReplyRule {
                source: ip,
                iif: iif.clone(),
                protocol: svc.key.protocol,
                sport: (d.addr.port() != 0).then_some(d.addr.port()),
            }));
        }
    }
    Ok(out)
}

/// The NAT real-server addresses of a configuration (whose interfaces must be resolved).
pub fn masq_dest_addrs(cfg: &Config) -> BTreeSet<IpAddr> {
    cfg.services
        .iter()
        .flat_map(|s| s.dests.iter())
        .filter(|d| d.forward == ForwardMethod::Masq)
        .map(|d| d.addr.ip())
        .collect()
}

/// The changes from one set of entries to another: additions in install order, removals in
/// reverse install order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Entries to add, in install order.
    pub add: Vec<Entry>,
    /// Entries to remove, in reverse install order.
    pub remove: Vec<Entry>,
}

impl Plan {
    /// What turns `from` into `to`.
    pub fn between(from: &BTreeSet<Entry>, to: &BTreeSet<Entry>) -> Plan {
        let mut remove: Vec<Entry> = from.difference(to).cloned().collect();
        remove.reverse();
        Plan {
            add: to.difference(from).cloned().collect(),
            remove,
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Builds the netlink route message for a route entry.
fn route_message(entry: &Entry, opts: &RouterOptions) -> Option<RouteMessage> {
    let (dst, len, table) = match entry {
        Entry::VipRoute(ip) | Entry::LocalRoute(ip) => {
            (*ip, if ip.is_ipv4() { 32 } else { 128 }, None)
        }
        Entry::TableDefault(Family::V4) => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, Some(opts.table)),
        Entry::TableDefault(Family::V6) => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0, Some(opts.table)),
        Entry::Rule(_) | Entry::IcmpRule(_) => return None,
    };
    let mut msg = match dst {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, len)
            .output_interface(opts.tun_index)
            .table_id(table.unwrap_or(RouteHeader::RT_TABLE_MAIN.into()))
            .protocol(RouteProtocol::from(opts.protocol))
            .scope(RouteScope::Link)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, len)
            .output_interface(opts.tun_index)
            .table_id(table.unwrap_or(RouteHeader::RT_TABLE_MAIN.into()))
            .protocol(RouteProtocol::from(opts.protocol))
            .scope(RouteScope::Universe)
            .build(),
    };
    if len == 0 {
        // A default route has no destination attribute.
        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::Destination(_)));
    }
    Some(msg)
}

/// Builds the netlink rule message for a rule entry (`None` for a route entry).
fn entry_rule_message(entry: &Entry, opts: &RouterOptions) -> Option<RuleMessage> {
    match entry {
        Entry::Rule(r) => Some(rule_message(r, opts)),
        Entry::IcmpRule(r) => {
            let mut msg = base_rule_message(r.family, None, &r.iif, opts);
            msg.attributes
                .push(RuleAttribute::IpProtocol(IpProtocol::from(r.ip_protocol())));
            Some(msg)
        }
        _ => None,
    }
}

/// Builds the netlink rule message for a reply rule.
fn rule_message(rule: &ReplyRule, opts: &RouterOptions) -> RuleMessage {
    let mut msg = base_rule_message(Family::of(rule.source), Some(rule.source), &rule.iif, opts);
    msg.attributes
        .push(RuleAttribute::IpProtocol(IpProtocol::from(
            rule.protocol.number(),
        )));
    if let Some(p) = rule.sport {
        msg.attributes
            .push(RuleAttribute::SourcePortRange(RulePortRange {
                start: p,
                end: p,
            }));
    }
    msg
}

/// The part of a steering rule every kind shares: `[from SOURCE] iif IIF lookup <table>` with
/// our priority and protocol id (a source is matched as a host prefix).
fn base_rule_message(
    family: Family,
    source: Option<IpAddr>,
    iif: &str,
    opts: &RouterOptions,
) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = match family {
        Family::V4 => rtnetlink::packet_route::AddressFamily::Inet,
        Family::V6 => rtnetlink::packet_route::AddressFamily::Inet6,
    };
    msg.header.src_len = match source {
        Some(IpAddr::V4(_)) => 32,
        Some(IpAddr::V6(_)) => 128,
        None => 0,
    };
    msg.header.action = RuleAction::ToTable;
    if opts.table > 255 {
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
    } else {
        msg.header.table = opts.table as u8;
    }
    let a = &mut msg.attributes;
    a.push(RuleAttribute::Table(opts.table));
    if let Some(source) = source {
        a.push(RuleAttribute::Source(source));
    }
    a.push(RuleAttribute::Iifname(iif.to_owned()));
    a.push(RuleAttribute::Priority(opts.rule_priority));
    a.push(RuleAttribute::Protocol(RouteProtocol::from(opts.protocol)));
    msg
}

/// Keeps the kernel's routes and rules in step with the configuration.
#[derive(Debug)]
pub struct Router {
    handle: Handle,
    opts: RouterOptions,
    installed: tokio::sync::Mutex<BTreeSet<Entry>>,
    redirector: Redirector,
}

impl Router {
    /// Opens a netlink connection (its task is spawned on the current tokio runtime).
    pub fn connect(opts: RouterOptions) -> Result<Router, RouterError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouterError::Connect)?;
        tokio::spawn(conn);
        let redirector = Redirector::new(handle.clone(), opts.redirect.clone(), opts.tun_index);
        Ok(Router {
            handle,
            opts,
            installed: tokio::sync::Mutex::new(BTreeSet::new()),
            redirector,
        })
    }

    /// Replaces the TUN's root queueing discipline with `noqueue` (`tc qdisc replace dev <tun>
    /// root noqueue`). A TUN never pushes back on its qdisc (a packet that finds the queue's
    /// ring full, `txqueuelen` long, is dropped), so a qdisc there buffers nothing and costs a
    /// lock, an enqueue and a dequeue per packet routed into the TUN.
    pub async fn use_noqueue(&self) -> Result<(), RouterError> {
        let mut msg = TcMessage::with_index(self.tun_ifindex()?);
        msg.header.parent = TcHandle::ROOT;
        msg.attributes.push(TcAttribute::Kind("noqueue".to_owned()));
        redirect::acknowledged(
            &self.handle,
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|source| RouterError::Netlink {
            operation: format!(
                "replace the root qdisc of {} with noqueue",
                self.opts.tun_name
            ),
            source,
        })
    }

    fn tun_ifindex(&self) -> Result<i32, RouterError> {
        i32::try_from(self.opts.tun_index).map_err(|_| RouterError::Netlink {
            operation: format!("use interface index {}", self.opts.tun_index),
            source: rtnetlink::Error::InvalidNla("interface index out of range".to_owned()),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &RouterOptions {
        &self.opts
    }

    /// The entries installed now.
    pub async fn installed(&self) -> BTreeSet<Entry> {
        self.installed.lock().await.clone()
    }

    /// Reads the `local` routing table again and rebuilds the pass filters in front of the
    /// reply redirects if it changed (an address was added to or removed from the director).
    /// Call it now and then; [`Router::sync`] does it too. Does nothing after [`Router::clear`].
    pub async fn refresh_redirects(&self) {
        self.redirector.refresh().await;
    }

    /// Deletes every route and rule that carries our protocol id and every redirect filter at
    /// our priorities (leftovers of a run that did not exit cleanly). Returns how many were
    /// removed (a redirect priority counts once per interface).
    pub async fn remove_stale(&self) -> Result<usize, RouterError> {
        let proto = RouteProtocol::from(self.opts.protocol);
        let mut removed = self
            .redirector
            .remove_stale()
            .await
            .map_err(|(operation, source)| RouterError::Netlink { operation, source })?;
        for version in [IpVersion::V4, IpVersion::V6] {
            let rules: Vec<RuleMessage> = self
                .handle
                .rule()
                .get(version.clone())
                .execute()
                .try_collect()
                .await
                .map_err(|source| RouterError::Netlink {
                    operation: "list policy rules".to_owned(),
                    source,
                })?;
            for rule in rules {
                if rule.attributes.contains(&RuleAttribute::Protocol(proto)) {
                    self.handle
                        .rule()
                        .del(rule)
                        .execute()
                        .await
                        .map_err(|source| RouterError::Netlink {
                            operation: "delete stale policy rule".to_owned(),
                            source,
                        })?;
                    removed += 1;
                }
            }
            let query = match version {
                IpVersion::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
                IpVersion::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
            };
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|source| RouterError::Netlink {
                    operation: "list routes".to_owned(),
                    source,
                })?;
            for route in routes {
                if route.header.protocol == proto {
                    self.handle
                        .route()
                        .del(route)
                        .execute()
                        .await
                        .map_err(|source| RouterError::Netlink {
                            operation: "delete stale route".to_owned(),
                            source,
                        })?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The interface through which the kernel reaches `ip` (a `route get`).
    pub async fn interface_of(&self, ip: IpAddr) -> Result<String, RouterError> {
        let query = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(ip, if ip.is_ipv4() { 32 } else { 128 })
            .expect("a host prefix is valid for its own family")
            .build();
        let routes: Vec<RouteMessage> =
            match self.handle.route().get(query).execute().try_collect().await {
                Ok(r) => r,
                Err(rtnetlink::Error::NetlinkError(_)) => return Err(RouterError::NoRoute(ip)),
                Err(source) => {
                    return Err(RouterError::Netlink {
                        operation: format!("route get {ip}"),
                        source,
                    });
                }
            };
        let oif = routes
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
            .ok_or(RouterError::NoRoute(ip))?;
        if oif == self.opts.tun_index {
            return Err(RouterError::RoutedThroughTun(
                ip,
                self.opts.tun_name.clone(),
            ));
        }
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .match_index(oif)
            .execute()
            .try_collect()
            .await
            .map_err(|source| RouterError::Netlink {
                operation: format!("get link {oif}"),
                source,
            })?;
        links
            .iter()
            .flat_map(|l| l.attributes.iter())
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .ok_or(RouterError::NoRoute(ip))
    }

    /// The MTU of the kernel's path to `ip`: the route's MTU metric (a learned path MTU or an
    /// `ip route ... mtu N`) if it has one, else the MTU of the outgoing interface. `None` if
    /// the kernel has no route or says neither.
    pub async fn path_mtu(&self, ip: IpAddr) -> Result<Option<u32>, RouterError> {
        let query = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(ip, if ip.is_ipv4() { 32 } else { 128 })
            .expect("a host prefix is valid for its own family")
            .build();
        let routes: Vec<RouteMessage> =
            match self.handle.route().get(query).execute().try_collect().await {
                Ok(r) => r,
                Err(rtnetlink::Error::NetlinkError(_)) => return Ok(None),
                Err(source) => {
                    return Err(RouterError::Netlink {
                        operation: format!("route get {ip}"),
                        source,
                    });
                }
            };
        let attrs = || routes.iter().flat_map(|r| r.attributes.iter());
        let metric = attrs().find_map(|a| match a {
            RouteAttribute::Metrics(m) => m.iter().find_map(|m| match m {
                rtnetlink::packet_route::route::RouteMetric::Mtu(v) if *v > 0 => Some(*v),
                _ => None,
            }),
            _ => None,
        });
        if metric.is_some() {
            return Ok(metric);
        }
        let Some(oif) = attrs().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        }) else {
            return Ok(None);
        };
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .match_index(oif)
            .execute()
            .try_collect()
            .await
            .map_err(|source| RouterError::Netlink {
                operation: format!("get link {oif}"),
                source,
            })?;
        Ok(links
            .iter()
            .flat_map(|l| l.attributes.iter())
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            }))
    }

    /// Installs the entries `cfg` needs and removes the ones it no longer needs. On error,
    /// undoes what this call did, so the installed set is unchanged. Then brings the reply
    /// redirects in step, which never fails the call (an interface whose filters cannot be
    /// installed keeps the routed path).
    pub async fn sync(&self, cfg: &Config) -> Result<(), RouterError> {
        let mut installed = self.installed.lock().await;
        let mut ifaces = BTreeMap::new();
        for ip in masq_dest_addrs(cfg) {
            ifaces.insert(ip, self.interface_of(ip).await?);
        }
        let desired = desired_entries(cfg, &ifaces)?;
        let plan = Plan::between(&installed, &desired);
        if !plan.is_empty() {
            self.apply(&plan).await?;
            *installed = desired;
        }
        if self.opts.redirect.enabled {
            // FULLNAT real servers need no rule, so a missing route is no error for them.
            for ip in redirect::redirect_dest_addrs(cfg) {
                if let std::collections::btree_map::Entry::Vacant(v) = ifaces.entry(ip)
                    && let Ok(name) = self.interface_of(ip).await
                {
                    v.insert(name);
                }
            }
            let redirects = redirect::desired_redirects(cfg, &ifaces);
            self.redirector.sync(redirects).await;
        }
        Ok(())
    }

    /// Carries out a plan; on error undoes what it did.
    async fn apply(&self, plan: &Plan) -> Result<(), RouterError> {
        let mut done: Vec<(bool, &Entry)> = Vec::new();
        let steps = plan
            .add
            .iter()
            .map(|e| (true, e))
            .chain(plan.remove.iter().map(|e| (false, e)));
        for (add, entry) in steps {
            let res = if add {
                self.add(entry).await
            } else {
                self.del(entry).await
            };
            match res {
                Ok(()) => done.push((add, entry)),
                Err(err) => {
                    for (added, e) in done.into_iter().rev() {
                        let undo = if added {
                            self.del(e).await
                        } else {
                            self.add(e).await
                        };
                        if let Err(u) = undo {
                            tracing::error!(error = %u, "rollback of {e} failed");
                        }
                    }
                    return Err(err);
                }
            }
            tracing::debug!("{} {entry}", if add { "added" } else { "removed" });
        }
        Ok(())
    }

    /// Removes everything installed (the redirects first, then the entries in reverse install
    /// order). Keeps going past errors and returns the first one.
    pub async fn clear(&self) -> Result<(), RouterError> {
        let mut installed = self.installed.lock().await;
        self.redirector.clear().await;
        let mut first = None;
        for entry in installed.iter().rev() {
            if let Err(e) = self.del(entry).await {
                tracing::warn!(error = %e, "cleanup");
                first.get_or_insert(e);
            }
        }
        installed.clear();
        first.map_or(Ok(()), Err)
    }

    async fn add(&self, entry: &Entry) -> Result<(), RouterError> {
        let res = match entry_rule_message(entry, &self.opts) {
            Some(msg) => {
                let mut req = self.handle.rule().add();
                *req.message_mut() = msg;
                req.execute().await
            }
            None => {
                let msg = route_message(entry, &self.opts).expect("a route entry");
                self.handle.route().add(msg).execute().await
            }
        };
        res.map_err(|source| RouterError::Netlink {
            operation: format!("add {entry} dev {}", self.opts.tun_name),
            source,
        })
    }

    /// Deletes an entry; one that is already gone (its device was removed, or someone deleted
    /// it) counts as deleted.
    async fn del(&self, entry: &Entry) -> Result<(), RouterError> {
        let res = match entry_rule_message(entry, &self.opts) {
            Some(msg) => self.handle.rule().del(msg).execute().await,
            None => {
                let msg = route_message(entry, &self.opts).expect("a route entry");
                self.handle.route().del(msg).execute().await
            }
        };
        match res {
            Err(rtnetlink::Error::NetlinkError(m))
                if matches!(-m.raw_code(), libc::ESRCH | libc::ENOENT) =>
            {
                tracing::debug!("{entry} was already gone");
                Ok(())
            }
            res => res.map_err(|source| RouterError::Netlink {
                operation: format!("delete {entry} dev {}", self.opts.tun_name),
                source,
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::SocketAddr;
    use ulvs_engine::{DestConfig, ServiceConfig, ServiceKey};

    pub(crate) fn dest(addr: &str, forward: ForwardMethod) -> DestConfig {
        DestConfig {
            addr: addr.parse().unwrap(),
            forward,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Default::default(),
        }
    }

    pub(crate) fn service(proto: Protocol, vip: &str, dests: Vec<DestConfig>) -> ServiceConfig {
        let mut s = ServiceConfig::new(ServiceKey {
            protocol: proto,
            addr: vip.parse::<SocketAddr>().unwrap(),
        });
        s.dests = dests;
        s
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn ifaces(pairs: &[(&str, &str)]) -> BTreeMap<IpAddr, String> {
        pairs.iter().map(|(a, n)| (ip(a), n.to_string())).collect()
    }

    fn rule(src: &str, iif: &str, protocol: Protocol, sport: Option<u16>) -> Entry {
        Entry::Rule(ReplyRule {
            source: ip(src),
            iif: iif.to_owned(),
            protocol,
            sport,
        })
    }

    fn icmp_rule(family: Family, iif: &str) -> Entry {
        Entry::IcmpRule(IcmpRule {
            family,
            iif: iif.to_owned(),
        })
    }

    #[test]
    fn empty_config_needs_nothing() {
        let set = desired_entries(&Config::default(), &BTreeMap::new()).unwrap();
        assert!(set.is_empty());
    }

    #[test]
    fn nat_service_needs_vip_route_rules_and_table_default() {
        let cfg = Config {
            services: vec![
                service(
                    Protocol::Tcp,
                    "198.18.100.1:80",
                    vec![
                        dest("198.18.2.2:8080", ForwardMethod::Masq),
                        dest("198.18.3.2:80", ForwardMethod::Masq),
                    ],
                ),
                // Same VIP, another port: one route. Same RS and port: one rule.
                service(
                    Protocol::Tcp,
                    "198.18.100.1:81",
                    vec![dest("198.18.2.2:8080", ForwardMethod::Masq)],
                ),
                service(
                    Protocol::Udp,
                    "198.18.100.2:53",
                    vec![dest("198.18.2.2:53", ForwardMethod::Masq)],
                ),
            ],
        };
        let set = desired_entries(
            &cfg,
            &ifaces(&[("198.18.2.2", "veth-rs1"), ("198.18.3.2", "veth-rs2")]),
        )
        .unwrap();
        let expected: BTreeSet<Entry> = [
            Entry::TableDefault(Family::V4),
            rule("198.18.2.2", "veth-rs1", Protocol::Tcp, Some(8080)),
            rule("198.18.3.2", "veth-rs2", Protocol::Tcp, Some(80)),
            rule("198.18.2.2", "veth-rs1", Protocol::Udp, Some(53)),
            icmp_rule(Family::V4, "veth-rs1"),
            icmp_rule(Family::V4, "veth-rs2"),
            Entry::VipRoute(ip("198.18.100.1")),
            Entry::VipRoute(ip("198.18.100.2")),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, expected);
    }

    #[test]
    fn non_nat_dests_get_no_rule_and_port_zero_has_no_sport() {
        let mut persistent = service(
            Protocol::Tcp,
            "[fd00:1b5::100]:0",
            vec![
                dest("[fd00:1b5:2::2]:0", ForwardMethod::Masq),
                dest("[fd00:1b5:3::2]:0", ForwardMethod::Route),
            ],
        );
        persistent.persistence = Some(ulvs_engine::Persistence {
            timeout_secs: 300,
            prefix_len: 128,
        });
        let cfg = Config {
            services: vec![persistent],
        };
        let set = desired_entries(&cfg, &ifaces(&[("fd00:1b5:2::2", "eth1")])).unwrap();
        let expected: BTreeSet<Entry> = [
            Entry::TableDefault(Family::V6),
            rule("fd00:1b5:2::2", "eth1", Protocol::Tcp, None),
            icmp_rule(Family::V6, "eth1"),
            Entry::VipRoute(ip("fd00:1b5::100")),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, expected);
        assert_eq!(
            masq_dest_addrs(&cfg),
            [ip("fd00:1b5:2::2")].into_iter().collect()
        );
    }

    #[test]
    fn icmp_rules_are_per_interface_and_family() {
        let cfg = Config {
            services: vec![
                service(
                    Protocol::Tcp,
                    "198.18.100.1:80",
                    vec![
                        dest("198.18.1.11:8080", ForwardMethod::Masq),
                        dest("198.18.2.2:8080", ForwardMethod::Masq),
                    ],
                ),
                service(
                    Protocol::Udp,
                    "[fd00:1b5::100]:53",
                    vec![dest("[fd00:1b5:1::11]:53", ForwardMethod::Masq)],
                ),
            ],
        };
        // 198.18.2.2 sits behind a router reached through br0 as well.
        let set = desired_entries(
            &cfg,
            &ifaces(&[
                ("198.18.1.11", "br0"),
                ("198.18.2.2", "br0"),
                ("fd00:1b5:1::11", "br0"),
            ]),
        )
        .unwrap();
        let icmp: Vec<&Entry> = set
            .iter()
            .filter(|e| matches!(e, Entry::IcmpRule(_)))
            .collect();
        assert_eq!(
            icmp,
            vec![&icmp_rule(Family::V4, "br0"), &icmp_rule(Family::V6, "br0")]
        );
    }

    #[test]
    fn fullnat_local_addresses_get_host_routes_and_no_rules() {
        let mut svc = service(
            Protocol::Tcp,
            "198.18.100.1:80",
            vec![dest("198.18.2.2:8080", ForwardMethod::FullNat)],
        );
        svc.local_addresses = vec![ip("198.18.50.1"), ip("198.18.50.2")];
        let cfg = Config {
            services: vec![svc],
        };
        let set = desired_entries(&cfg, &BTreeMap::new()).unwrap();
        let expected: BTreeSet<Entry> = [
            Entry::LocalRoute(ip("198.18.50.1")),
            Entry::LocalRoute(ip("198.18.50.2")),
            Entry::VipRoute(ip("198.18.100.1")),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, expected);
        let plan = Plan::between(&BTreeSet::new(), &set);
        assert!(
            matches!(plan.add[0], Entry::LocalRoute(_)),
            "local routes first"
        );
        let opts = RouterOptions::new("ulvs0", 7);
        let m = route_message(&Entry::LocalRoute(ip("198.18.50.1")), &opts).unwrap();
        assert_eq!(m.header.destination_prefix_length, 32);
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert_eq!(
            Entry::LocalRoute(ip("fd00:1b5:3::1")).to_string(),
            "route fd00:1b5:3::1/128"
        );
    }

    #[test]
    fn missing_interface_is_an_error() {
        let cfg = Config {
            services: vec![service(
                Protocol::Tcp,
                "198.18.100.1:80",
                vec![dest("198.18.2.2:80", ForwardMethod::Masq)],
            )],
        };
        assert!(matches!(
            desired_entries(&cfg, &BTreeMap::new()),
            Err(RouterError::NoRoute(a)) if a == ip("198.18.2.2")
        ));
    }

    #[test]
    fn plan_adds_in_install_order_and_removes_in_reverse() {
        let old: BTreeSet<Entry> = [
            Entry::TableDefault(Family::V4),
            rule("198.18.2.2", "a", Protocol::Tcp, Some(80)),
            Entry::VipRoute(ip("198.18.100.1")),
        ]
        .into_iter()
        .collect();
        let new: BTreeSet<Entry> = [
            Entry::TableDefault(Family::V6),
            rule("fd00:1b5:2::2", "b", Protocol::Tcp, Some(80)),
            Entry::VipRoute(ip("fd00:1b5::1")),
        ]
        .into_iter()
        .collect();
        let plan = Plan::between(&old, &new);
        assert_eq!(plan.add, new.iter().cloned().collect::<Vec<_>>());
        assert_eq!(plan.remove, old.iter().rev().cloned().collect::<Vec<_>>());
        assert!(Plan::between(&new, &new).is_empty());
        // A rule whose interface changed is removed and re-added.
        let moved: BTreeSet<Entry> = [
            Entry::TableDefault(Family::V4),
            rule("198.18.2.2", "c", Protocol::Tcp, Some(80)),
            Entry::VipRoute(ip("198.18.100.1")),
        ]
        .into_iter()
        .collect();
        let plan = Plan::between(&old, &moved);
        assert_eq!(
            plan.add,
            vec![rule("198.18.2.2", "c", Protocol::Tcp, Some(80))]
        );
        assert_eq!(
            plan.remove,
            vec![rule("198.18.2.2", "a", Protocol::Tcp, Some(80))]
        );
    }

    #[test]
    fn messages_carry_our_protocol_table_and_match() {
        let opts = RouterOptions::new("ulvs0", 7);
        let r = ReplyRule {
            source: ip("198.18.2.2"),
            iif: "veth1".into(),
            protocol: Protocol::Udp,
            sport: Some(53),
        };
        let m = rule_message(&r, &opts);
        assert_eq!(m.header.src_len, 32);
        assert_eq!(m.header.table, 0x75);
        assert_eq!(m.header.action, RuleAction::ToTable);
        for attr in [
            RuleAttribute::Source(ip("198.18.2.2")),
            RuleAttribute::Iifname("veth1".into()),
            RuleAttribute::Priority(100),
            RuleAttribute::Protocol(RouteProtocol::from(0x75)),
            RuleAttribute::IpProtocol(IpProtocol::Udp),
            RuleAttribute::SourcePortRange(RulePortRange { start: 53, end: 53 }),
        ] {
            assert!(m.attributes.contains(&attr), "{attr:?} missing");
        }
        let vip = route_message(&Entry::VipRoute(ip("198.18.100.1")), &opts).unwrap();
        assert_eq!(vip.header.destination_prefix_length, 32);
        assert_eq!(vip.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(vip.header.protocol, RouteProtocol::from(0x75));
        assert!(vip.attributes.contains(&RouteAttribute::Oif(7)));
        let def = route_message(&Entry::TableDefault(Family::V4), &opts).unwrap();
        assert_eq!(def.header.destination_prefix_length, 0);
        assert_eq!(def.header.table, 0x75);
        assert!(
            !def.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        assert!(route_message(&Entry::Rule(r), &opts).is_none());
        for (family, af, proto) in [
            (
                Family::V4,
                rtnetlink::packet_route::AddressFamily::Inet,
                IpProtocol::Icmp,
            ),
            (
                Family::V6,
                rtnetlink::packet_route::AddressFamily::Inet6,
                IpProtocol::from(58),
            ),
        ] {
            let e = icmp_rule(family, "veth1");
            assert!(route_message(&e, &opts).is_none());
            let m = entry_rule_message(&e, &opts).unwrap();
            assert_eq!(m.header.action, RuleAction::ToTable);
            assert_eq!(m.header.family, af);
            // Any source: a router between the director and the real server has its own.
            assert_eq!(m.header.src_len, 0);
            assert!(
                !m.attributes
                    .iter()
                    .any(|a| matches!(a, RuleAttribute::Source(_)))
            );
            for attr in [
                RuleAttribute::Iifname("veth1".into()),
                RuleAttribute::IpProtocol(proto),
                RuleAttribute::Protocol(RouteProtocol::from(0x75)),
            ] {
                assert!(m.attributes.contains(&attr), "{attr:?} missing");
            }
            assert!(
                !m.attributes
                    .iter()
                    .any(|a| matches!(a, RuleAttribute::SourcePortRange(_)))
            );
        }
    }

    #[test]
    fn entries_display_like_ip_commands() {
        assert_eq!(
            rule("198.18.2.2", "veth1", Protocol::Tcp, Some(80)).to_string(),
            "rule from 198.18.2.2/32 iif veth1 ipproto tcp sport 80"
        );
        assert_eq!(
            icmp_rule(Family::V6, "eth1").to_string(),
            "rule iif eth1 ipproto ipv6-icmp"
        );
        assert_eq!(
            icmp_rule(Family::V4, "br0").to_string(),
            "rule iif br0 ipproto icmp"
        );
        assert_eq!(
            Entry::VipRoute(ip("fd00:1b5::1")).to_string(),
            "route fd00:1b5::1/128"
        );
    }
}
