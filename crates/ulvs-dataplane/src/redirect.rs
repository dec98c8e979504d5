//! Reply redirects: `tc` ingress filters that hand real servers' replies straight to the TUN.
//!
//! The policy rules of [`crate::router`] steer a real server's replies into the TUN through the
//! kernel's forwarding path: each reply is received, routed (policy rules, reverse-path check),
//! forwarded and only then queued to the TUN. On the interface a real server is reached through,
//! a `u32` filter in the ingress hook of a `clsact` qdisc with a `mirred egress redirect dev
//! <tun>` action does the same hand-over before any of that, which is most of what a short
//! connection costs the director beyond its own work:
//! - a NAT reply filter matches `src RS`, the service's protocol and (for a real server on a
//!   non-zero port) `sport`: exactly what the reply rule matches, and only packets whose ports
//!   sit at the fixed offset (no IPv4 options, not a fragment, no IPv6 extension header);
//! - a FULLNAT filter matches `dst LADDR` (a local address), which the main table routes into
//!   the TUN anyway.
//!
//! - ahead of those, pass filters (a match without an action: the packet goes on into the
//!   stack) for every
//!   destination of the `local` routing table (the director's own addresses and broadcast
//!   addresses) and for multicast, because the policy rules only ever saw what the `local`
//!   table did not take: a real server answering the director's own connection (a health check,
//!   a proxy on the director using the same backends) is delivered straight to its socket.
//!
//! The filters are an accelerator over the rules and routes, never a replacement: whatever they
//! do not match (fragments, IP options, ICMP errors, a kernel without `cls_u32`/`act_mirred`)
//! still takes the routed path and reaches the TUN the old way, so installing, rebuilding or
//! failing to install them never loses a packet. The `local` table is read again at every
//! configuration change and by [`crate::Router::refresh_redirects`]; a packet for an address
//! added in between is handed to the TUN, and the engine passes it back to the kernel (it
//! belongs to no connection), which delivers it.
//!
//! Every filter sits at one of the router's two priorities ([`RedirectOptions::priority`] for
//! IPv4, the next one for IPv6), so a rebuild or the removal of a crashed run's leftovers
//! deletes whole priorities without touching anyone else's filters. The `clsact` qdisc is
//! created only where none exists and removed only if the router created it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use ulvs_engine::{Config, ForwardMethod, Protocol};

/// Default priority of the IPv4 redirect filters (IPv6 uses the next one).
pub const DEFAULT_PRIORITY: u16 = 0x7500;

/// The kernel's `local` routing table (`RT_TABLE_LOCAL`).
const RT_TABLE_LOCAL: u32 = 255;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// Settings of the reply redirects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectOptions {
    /// Whether to install redirect filters at all (without them the rules and routes do the
    /// steering alone).
    pub enabled: bool,
    /// Filter priority of the IPv4 filters; the IPv6 filters use `priority + 1`.
    pub priority: u16,
}

impl Default for RedirectOptions {
    fn default() -> Self {
        RedirectOptions {
            enabled: true,
            priority: DEFAULT_PRIORITY,
        }
    }
}

impl RedirectOptions {
    fn priorities(&self) -> [(u16, u16); 2] {
        [
            (self.priority, ETH_P_IP),
            (self.priority.wrapping_add(1), ETH_P_IPV6),
        ]
    }
}

/// What one filter matches on the ingress of an interface. The order of the variants is the
/// order in which the kernel tries them (pass filters first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Redirect {
    /// Packets to a destination of the `local` table (or multicast) go on into the stack.
    Pass {
        /// The destination prefix.
        dst: IpAddr,
        /// Its length.
        prefix: u8,
    },
    /// A NAT real server's replies: from `source` (and `sport` when the real server's port is
    /// not 0), of the service's protocol.
    Reply {
        /// The real server's address.
        source: IpAddr,
        /// The service's transport protocol.
        protocol: Protocol,
        /// The real server's port, if not 0.
        sport: Option<u16>,
    },
    /// Everything to a FULLNAT local address.
    Local(IpAddr),
}

impl Redirect {
    fn is_ipv4(&self) -> bool {
        match self {
            Redirect::Pass { dst: ip, .. }
            | Redirect::Reply { source: ip, .. }
            | Redirect::Local(ip) => ip.is_ipv4(),
        }
    }
}

impl std::fmt::Display for Redirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Redirect::Reply {
                source,
                protocol,
                sport,
            } => {
                let proto = protocol.to_string().to_lowercase();
                write!(f, "redirect of {proto} from {source}")?;
                if let Some(p) = sport {
                    write!(f, " port {p}")?;
                }
                Ok(())
            }
            Redirect::Local(ip) => write!(f, "redirect of packets to {ip}"),
            Redirect::Pass { dst, prefix } => write!(f, "pass of packets to {dst}/{prefix}"),
        }
    }
}

/// The redirects a configuration needs, per interface. `ifaces` maps NAT and FULLNAT real
/// servers' addresses to the interface each is reached through; a real server missing from it
/// gets no filter (its replies take the routed path). See [`with_passes`] for the pass
/// filters in front of them.
pub fn desired_redirects(
    cfg: &Config,
    ifaces: &BTreeMap<IpAddr, String>,
) -> BTreeMap<String, BTreeSet<Redirect>> {
    let mut out: BTreeMap<String, BTreeSet<Redirect>> = BTreeMap::new();
    for svc in &cfg.services {
        for d in &svc.dests {
            let ip = d.addr.ip();
            let Some(iif) = ifaces.get(&ip) else { continue };
            match d.forward {
                ForwardMethod::Masq => {
                    out.entry(iif.clone()).or_default().insert(Redirect::Reply {
                        source: ip,
                        protocol: svc.key.protocol,
                        sport: (d.addr.port() != 0).then_some(d.addr.port()),
                    });
                }
                ForwardMethod::FullNat => {
                    let locals = svc
                        .local_addresses
                        .iter()
                        .filter(|l| l.is_ipv4() == ip.is_ipv4());
                    let set = out.entry(iif.clone()).or_default();
                    set.extend(locals.map(|&l| Redirect::Local(l)));
                }
                _ => {}
            }
        }
    }
    out
}

/// `redirects` with a pass filter for each of `locals` (destination prefixes of the `local`
/// table) on every interface, in each family that interface redirects, plus the multicast
/// prefixes (and the IPv4 limited broadcast), which the `local` table does not hold.
pub fn with_passes(
    redirects: &BTreeMap<String, BTreeSet<Redirect>>,
    locals: &BTreeSet<(IpAddr, u8)>,
) -> BTreeMap<String, BTreeSet<Redirect>> {
    let always = [
        (IpAddr::from([224, 0, 0, 0]), 4),
        (IpAddr::from([255, 255, 255, 255]), 32),
        (IpAddr::from([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8),
    ];
    redirects
        .iter()
        .filter(|(_, set)| !set.is_empty())
        .map(|(name, set)| {
            let v4 = set.iter().any(Redirect::is_ipv4);
            let v6 = set.iter().any(|r| !r.is_ipv4());
            let passes = locals
                .iter()
                .chain(always.iter())
                .filter(|(ip, _)| if ip.is_ipv4() { v4 } else { v6 })
                .map(|&(dst, prefix)| Redirect::Pass { dst, prefix });
            let mut all = set.clone();
            all.extend(passes);
            (name.clone(), all)
        })
        .collect()
}

/// The real servers whose interfaces [`desired_redirects`] needs (NAT and FULLNAT).
pub fn redirect_dest_addrs(cfg: &Config) -> BTreeSet<IpAddr> {
    cfg.services
        .iter()
        .flat_map(|s| s.dests.iter())
        .filter(|d| matches!(d.forward, ForwardMethod::Masq | ForwardMethod::FullNat))
        .map(|d| d.addr.ip())
        .collect()
}

fn key(off: i32, mask: u32, val: u32) -> TcU32Key {
    let mut k = TcU32Key::default();
    k.off = off;
    k.mask = mask;
    k.val = val & mask;
    k
}

/// Keys matching the first `prefix` bits of the address at `off` (no key for a zero-length
/// prefix or a word it leaves out).
fn prefix_keys(ip: IpAddr, prefix: u8, off: i32, out: &mut Vec<TcU32Key>) {
    let words: Vec<u32> = match ip {
        IpAddr::V4(a) => vec![u32::from(a)],
        IpAddr::V6(a) => a
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
    };
    let mut left = u32::from(prefix);
    for (i, word) in words.into_iter().enumerate() {
        if left == 0 {
            break;
        }
        let bits = left.min(32);
        left -= bits;
        let mask = u32::MAX << (32 - bits);
        out.push(key(off + 4 * i as i32, mask, word));
    }
}

fn address_keys(ip: IpAddr, off: i32, out: &mut Vec<TcU32Key>) {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    prefix_keys(ip, len, off, out);
}

/// The u32 selector of a redirect: keys on the network header (offsets from its start; values
/// and masks as host-order words of the big-endian packet).
pub fn selector(r: &Redirect) -> TcU32Selector {
    let mut keys = Vec::new();
    match (r, r.is_ipv4()) {
        (
            Redirect::Reply {
                source,
                protocol,
                sport,
            },
            true,
        ) => {
            // Version 4, IHL 5: the ports follow a 20-byte header.
            keys.push(key(0, 0xff00_0000, 0x4500_0000));
            // Neither more fragments nor a fragment offset.
            keys.push(key(4, 0x0000_3fff, 0));
            keys.push(key(8, 0x00ff_0000, u32::from(protocol.number()) << 16));
            address_keys(*source, 12, &mut keys);
            if let Some(p) = sport {
                keys.push(key(20, 0xffff_0000, u32::from(*p) << 16));
            }
        }
        (
            Redirect::Reply {
                source,
                protocol,
                sport,
            },
            false,
        ) => {
            // The next header is the transport header itself (no extension header).
            keys.push(key(4, 0x0000_ff00, u32::from(protocol.number()) << 8));
            address_keys(*source, 8, &mut keys);
            if let Some(p) = sport {
                keys.push(key(40, 0xffff_0000, u32::from(*p) << 16));
            }
        }
        (Redirect::Local(ip), true) => address_keys(*ip, 16, &mut keys),
        (Redirect::Local(ip), false) => address_keys(*ip, 24, &mut keys),
        (Redirect::Pass { dst, prefix }, v4) => {
            prefix_keys(*dst, *prefix, if v4 { 16 } else { 24 }, &mut keys);
            if keys.is_empty() {
                // A default route in the local table: match every packet.
                keys.push(key(0, 0, 0));
            }
        }
    }
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = u8::try_from(keys.len()).expect("at most 7 keys");
    sel.keys = keys;
    sel
}

/// The `tc filter add dev <ifindex> ingress prio P protocol ip|ipv6 u32 <selector> action mirred
/// egress redirect dev <tun>` message of a redirect. A pass filter has no action: a terminal
/// `u32` match without one ends the classification with "ok", so the packet goes on into the
/// stack (and needs no `act_gact`, which kernels often leave out).
fn filter_message(ifindex: i32, r: &Redirect, tun_index: u32, opts: &RedirectOptions) -> TcMessage {
    let (prio, proto) = opts.priorities()[usize::from(!r.is_ipv4())];
    let mut msg = TcMessage::with_index(ifindex);
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    };
    msg.header.info = (u32::from(prio) << 16) | u32::from(proto.to_be());
    msg.attributes
        .push(TcAttribute::Kind(TcFilterU32::KIND.to_owned()));
    let mut options = vec![TcOption::U32(TcFilterU32Option::Selector(selector(r)))];
    if !matches!(r, Redirect::Pass { .. }) {
        let mut mirror = TcMirror::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = tun_index;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind(TcActionMirror::KIND.to_owned()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        options.push(TcOption::U32(TcFilterU32Option::Action(vec![action])));
    }
    msg.attributes.push(TcAttribute::Options(options));
    msg
}

/// What is installed on one interface.
#[derive(Debug)]
struct Installed {
    ifindex: i32,
    /// Whether the router created the interface's `clsact` qdisc (and so removes it).
    own_qdisc: bool,
    redirects: BTreeSet<Redirect>,
}

/// Keeps the redirect filters in step with the configuration. Every failure is logged and
/// leaves the interface without filters (the routed path carries its replies).
#[derive(Debug)]
pub(crate) struct Redirector {
    handle: Handle,
    opts: RedirectOptions,
    tun_index: u32,
    state: tokio::sync::Mutex<State>,
}

/// What the redirector was asked for and what it installed.
#[derive(Debug, Default)]
struct State {
    /// The redirects of the configuration (no pass filters), per interface.
    wanted: BTreeMap<String, BTreeSet<Redirect>>,
    /// The destinations of the `local` table the pass filters were made from.
    locals: BTreeSet<(IpAddr, u8)>,
    /// What is installed, per interface.
    installed: BTreeMap<String, Installed>,
    /// Set by [`Redirector::clear`]: nothing is installed any more.
    closed: bool,
}

/// A netlink request failed: what was being done and the kernel's answer.
type Failure = (String, rtnetlink::Error);

impl Redirector {
    pub(crate) fn new(handle: Handle, opts: RedirectOptions, tun_index: u32) -> Redirector {
        Redirector {
            handle,
            opts,
            tun_index,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Installs the redirects `wanted` (from [`desired_redirects`]) behind pass filters made
    /// from the `local` table as it is now.
    pub(crate) async fn sync(&self, wanted: BTreeMap<String, BTreeSet<Redirect>>) {
        if !self.opts.enabled {
            return;
        }
        let mut state = self.state.lock().await;
        if state.closed {
            return;
        }
        match self.local_destinations().await {
            Ok(locals) => state.locals = locals,
            Err((operation, e)) => tracing::warn!(error = %e, "{operation} failed"),
        }
        state.wanted = wanted;
        self.apply(&mut state).await;
    }

    /// Reads the `local` table again and, if it changed, rebuilds the pass filters.
    pub(crate) async fn refresh(&self) {
        if !self.opts.enabled {
            return;
        }
        let mut state = self.state.lock().await;
        if state.closed || state.installed.is_empty() {
            return;
        }
        match self.local_destinations().await {
            Ok(locals) if locals != state.locals => {
                state.locals = locals;
                self.apply(&mut state).await;
            }
            Ok(_) => {}
            Err((operation, e)) => tracing::debug!(error = %e, "{operation} failed"),
        }
    }

    /// The destination prefixes of the `local` routing table (both families).
    async fn local_destinations(&self) -> Result<BTreeSet<(IpAddr, u8)>, Failure> {
        let mut out = BTreeSet::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|e| ("list the local routing table".to_owned(), e))?;
            for r in routes {
                let table = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(r.header.table));
                if table != RT_TABLE_LOCAL {
                    continue;
                }
                let dst = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
                    _ => None,
                });
                if let Some(dst) = dst {
                    out.insert((dst, r.header.destination_prefix_length));
                }
            }
        }
        Ok(out)
    }

    /// Brings every interface's filters to the wanted redirects behind the pass filters: an
    /// interface whose set changed gets its filters rebuilt (replies take the routed path
    /// meanwhile); one that no longer needs any loses them (and its `clsact` qdisc if the
    /// router created it).
    async fn apply(&self, state: &mut State) {
        let desired = with_passes(&state.wanted, &state.locals);
        let installed = &mut state.installed;
        let names: BTreeSet<String> = installed.keys().chain(desired.keys()).cloned().collect();
        for name in names {
            let want = desired.get(&name).filter(|s| !s.is_empty());
            let have = installed.get(&name);
            if have.map(|h| &h.redirects) == want {
                continue;
            }
            let old = installed.remove(&name);
            if let Some(old) = &old {
                self.remove_filters(old.ifindex).await;
            }
            // The interface as it is now (not looked up when it is to lose its filters).
            let now = match want {
                Some(_) => Some(self.ifindex(&name).await),
                None => None,
            };
            // The qdisc the router created stays its own while the interface is the same one.
            let same = matches!((&old, &now), (Some(o), Some(Ok(i))) if o.ifindex == *i);
            let own_qdisc = match old {
                Some(old) if same => old.own_qdisc,
                Some(old) => {
                    if old.own_qdisc {
                        self.remove_qdisc(old.ifindex, &name).await;
                    }
                    false
                }
                None => false,
            };
            let (Some(want), Some(now)) = (want, now) else {
                continue;
            };
            let res = match now {
                Ok(ifindex) => self.install(&name, ifindex, want, own_qdisc).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(done) => {
                    tracing::debug!(interface = %name, filters = want.len(), "reply redirects installed");
                    installed.insert(name, done);
                }
                Err((operation, source)) => tracing::warn!(
                    interface = %name,
                    error = %source,
                    "{operation} failed; replies through this interface take the routed path"
                ),
            }
        }
    }

    /// Installs `want` on `name` (index `ifindex`), creating its `clsact` qdisc unless
    /// `own_qdisc` says the router already did; on failure removes what it added.
    async fn install(
        &self,
        name: &str,
        ifindex: i32,
        want: &BTreeSet<Redirect>,
        own_qdisc: bool,
    ) -> Result<Installed, Failure> {
        let own_qdisc = own_qdisc || self.add_qdisc(ifindex, name).await?;
        for r in want {
            let msg = filter_message(ifindex, r, self.tun_index, &self.opts);
            let res = acknowledged(
                &self.handle,
                RouteNetlinkMessage::NewTrafficFilter(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await;
            if let Err(e) = res {
                self.remove_filters(ifindex).await;
                if own_qdisc {
                    self.remove_qdisc(ifindex, name).await;
                }
                return Err((format!("add the {r} on {name}"), e));
            }
        }
        Ok(Installed {
            ifindex,
            own_qdisc,
            redirects: want.clone(),
        })
    }

    /// Removes every filter and the qdiscs the router created.
    pub(crate) async fn clear(&self) {
        let mut state = self.state.lock().await;
        state.closed = true;
        for (name, i) in std::mem::take(&mut state.installed) {
            self.remove_filters(i.ifindex).await;
            if i.own_qdisc {
                self.remove_qdisc(i.ifindex, &name).await;
            }
        }
    }

    /// Deletes the router's filter priorities from the ingress of every interface (leftovers
    /// of a run that did not exit cleanly; their redirect target, the old TUN, is gone, so they
    /// would drop every reply they match). Returns how many priorities were removed.
    pub(crate) async fn remove_stale(&self) -> Result<usize, Failure> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| ("list interfaces".to_owned(), e))?;
        let mut removed = 0;
        for link in links {
            let ifindex = i32::try_from(link.header.index).unwrap_or(i32::MAX);
            // An interface without an ingress qdisc has no filters to list.
            let Ok(filters) = self
                .handle
                .traffic_filter(ifindex)
                .get()
                .ingress()
                .execute()
                .try_collect::<Vec<TcMessage>>()
                .await
            else {
                continue;
            };
            let prios: BTreeSet<u16> = filters
                .iter()
                .map(|f| (f.header.info >> 16) as u16)
                .filter(|p| self.opts.priorities().iter().any(|(ours, _)| ours == p))
                .collect();
            for prio in prios {
                if self.remove_priority(ifindex, prio).await.is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    async fn remove_filters(&self, ifindex: i32) {
        for (prio, _) in self.opts.priorities() {
            if let Err(e) = self.remove_priority(ifindex, prio).await {
                tracing::debug!(ifindex, prio, error = %e, "no redirect filters to remove");
            }
        }
    }

    /// `tc filter del dev <ifindex> ingress prio <prio>`: every filter of that priority.
    async fn remove_priority(&self, ifindex: i32, prio: u16) -> Result<(), rtnetlink::Error> {
        let mut msg = TcMessage::with_index(ifindex);
        msg.header.parent = TcHandle {
            major: 0xffff,
            minor: TcHandle::MIN_INGRESS,
        };
        msg.header.info = u32::from(prio) << 16;
        acknowledged(&self.handle, RouteNetlinkMessage::DelTrafficFilter(msg), 0).await
    }

    /// Creates a `clsact` qdisc on `ifindex`; `false` if the interface already has one (or an
    /// `ingress` qdisc, whose hook the filters share), which the router then leaves in place.
    async fn add_qdisc(&self, ifindex: i32, name: &str) -> Result<bool, Failure> {
        let res = acknowledged(
            &self.handle,
            RouteNetlinkMessage::NewQueueDiscipline(clsact_message(ifindex)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await;
        match res {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::EEXIST => Ok(false),
            Err(e) => Err((format!("add a clsact qdisc to {name}"), e)),
        }
    }

    async fn remove_qdisc(&self, ifindex: i32, name: &str) {
        let res = acknowledged(
            &self.handle,
            RouteNetlinkMessage::DelQueueDiscipline(clsact_message(ifindex)),
            0,
        )
        .await;
        if let Err(e) = res {
            tracing::debug!(interface = name, error = %e, "clsact qdisc already gone");
        }
    }

    async fn ifindex(&self, name: &str) -> Result<i32, Failure> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_collect()
            .await
            .map_err(|e| (format!("get interface {name}"), e))?;
        links
            .iter()
            .find(|l| {
                l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name))
            })
            .and_then(|l| i32::try_from(l.header.index).ok())
            .ok_or_else(|| {
                (
                    format!("get interface {name}"),
                    rtnetlink::Error::InvalidNla("no such interface".to_owned()),
                )
            })
    }
}

/// Sends one request (`NLM_F_REQUEST | NLM_F_ACK | flags`) and waits for its acknowledgement;
/// an error answer is the error.
pub(crate) async fn acknowledged(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut handle = handle.clone();
    let mut answers = handle.request(req)?;
    while let Some(answer) = answers.next().await {
        if let NetlinkPayload::Error(e) = answer.payload {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

/// `tc qdisc ... dev <ifindex> clsact`.
fn clsact_message(ifindex: i32) -> TcMessage {
    let mut msg = TcMessage::with_index(ifindex);
    msg.header.parent = TcHandle::CLSACT;
    msg.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    msg.attributes.push(TcAttribute::Kind("clsact".to_owned()));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::{dest, ifaces, ip, service};

    fn words(sel: &TcU32Selector) -> Vec<(i32, u32, u32)> {
        sel.keys.iter().map(|k| (k.off, k.mask, k.val)).collect()
    }

    /// The options (selector, action) of a filter message.
    fn u32_options(msg: &TcMessage) -> &Vec<TcOption> {
        msg.attributes
            .iter()
            .find_map(|a| match a {
                TcAttribute::Options(o) => Some(o),
                _ => None,
            })
            .expect("options")
    }

    #[test]
    fn nat_and_fullnat_dests_get_filters_on_their_interfaces() {
        let mut fullnat = service(
            Protocol::Udp,
            "198.18.0.11:53",
            vec![dest("198.18.2.1:53", ForwardMethod::FullNat)],
        );
        fullnat.local_addresses = vec![ip("198.18.3.1"), ip("fd00:1b5::3:1")];
        let cfg = Config {
            services: vec![
                service(
                    Protocol::Tcp,
                    "198.18.0.10:80",
                    vec![
                        dest("198.18.1.1:8080", ForwardMethod::Masq),
                        dest("198.18.1.2:0", ForwardMethod::Masq),
                        dest("198.18.1.3:80", ForwardMethod::Route),
                        dest("198.18.9.9:80", ForwardMethod::Masq),
                    ],
                ),
                fullnat,
            ],
        };
        let ifaces = ifaces(&[
            ("198.18.1.1", "rs0"),
            ("198.18.1.2", "rs0"),
            ("198.18.1.3", "rs0"),
            ("198.18.2.1", "rs1"),
        ]);
        let got = desired_redirects(&cfg, &ifaces);
        let rs0: BTreeSet<Redirect> = [
            Redirect::Reply {
                source: ip("198.18.1.1"),
                protocol: Protocol::Tcp,
                sport: Some(8080),
            },
            Redirect::Reply {
                source: ip("198.18.1.2"),
                protocol: Protocol::Tcp,
                sport: None,
            },
        ]
        .into();
        // The DR real server gets nothing; the one without a known interface neither; the
        // FULLNAT real server gets its family's local address only.
        let rs1: BTreeSet<Redirect> = [Redirect::Local(ip("198.18.3.1"))].into();
        assert_eq!(
            got,
            [("rs0".to_owned(), rs0), ("rs1".to_owned(), rs1)].into()
        );
        assert_eq!(
            redirect_dest_addrs(&cfg),
            ["198.18.1.1", "198.18.1.2", "198.18.9.9", "198.18.2.1"]
                .iter()
                .map(|s| ip(s))
                .collect()
        );
    }

    #[test]
    fn ipv4_reply_selector_matches_plain_packets_from_the_port() {
        let sel = selector(&Redirect::Reply {
            source: ip("198.18.1.1"),
            protocol: Protocol::Tcp,
            sport: Some(8080),
        });
        assert!(sel.flags.contains(TcU32SelectorFlags::Terminal));
        assert_eq!(usize::from(sel.nkeys), sel.keys.len());
        assert_eq!(
            words(&sel),
            vec![
                (0, 0xff00_0000, 0x4500_0000),
                (4, 0x0000_3fff, 0),
                (8, 0x00ff_0000, 0x0006_0000),
                (12, 0xffff_ffff, 0xc612_0101),
                (20, 0xffff_0000, 0x1f90_0000),
            ]
        );
    }

    #[test]
    fn ipv6_and_local_selectors() {
        let sel = selector(&Redirect::Reply {
            source: ip("fd00:1b5::1:1"),
            protocol: Protocol::Udp,
            sport: None,
        });
        assert_eq!(
            words(&sel),
            vec![
                (4, 0x0000_ff00, 0x0000_1100),
                (8, u32::MAX, 0xfd00_01b5),
                (12, u32::MAX, 0),
                (16, u32::MAX, 0),
                (20, u32::MAX, 0x0001_0001),
            ]
        );
        let sel = selector(&Redirect::Local(ip("198.18.3.1")));
        assert_eq!(words(&sel), vec![(16, u32::MAX, 0xc612_0301)]);
        let sel = selector(&Redirect::Local(ip("fd00:1b5::3:1")));
        assert_eq!(sel.keys.len(), 4);
        assert_eq!(sel.keys[0].off, 24);
        assert_eq!(sel.keys[3].off, 36);
    }

    #[test]
    fn pass_filters_go_first_for_the_families_an_interface_redirects() {
        let v4 = Redirect::Local(ip("198.18.3.1"));
        let v6 = Redirect::Reply {
            source: ip("fd00:1b5::1:1"),
            protocol: Protocol::Tcp,
            sport: Some(80),
        };
        let redirects: BTreeMap<String, BTreeSet<Redirect>> = [
            ("rs0".to_owned(), [v4.clone()].into()),
            ("rs1".to_owned(), [v6.clone()].into()),
            ("rs2".to_owned(), BTreeSet::new()),
        ]
        .into();
        let locals: BTreeSet<(IpAddr, u8)> =
            [(ip("198.18.1.1"), 32), (ip("fd00:1b5::1"), 128)].into();
        let got = with_passes(&redirects, &locals);
        let pass = |s: &str, prefix| Redirect::Pass { dst: ip(s), prefix };
        let rs0: Vec<Redirect> = got["rs0"].iter().cloned().collect();
        assert_eq!(
            rs0,
            vec![
                pass("198.18.1.1", 32),
                pass("224.0.0.0", 4),
                pass("255.255.255.255", 32),
                v4
            ]
        );
        let rs1: Vec<Redirect> = got["rs1"].iter().cloned().collect();
        assert_eq!(rs1, vec![pass("fd00:1b5::1", 128), pass("ff00::", 8), v6]);
        assert!(!got.contains_key("rs2"));
    }

    #[test]
    fn pass_selectors_match_the_destination_prefix() {
        let sel = selector(&Redirect::Pass {
            dst: ip("224.0.0.0"),
            prefix: 4,
        });
        assert_eq!(words(&sel), vec![(16, 0xf000_0000, 0xe000_0000)]);
        let sel = selector(&Redirect::Pass {
            dst: ip("fd00:1b5:0:1::"),
            prefix: 56,
        });
        assert_eq!(
            words(&sel),
            vec![(24, u32::MAX, 0xfd00_01b5), (28, 0xffff_ff00, 0)]
        );
        let sel = selector(&Redirect::Pass {
            dst: ip("0.0.0.0"),
            prefix: 0,
        });
        assert_eq!(words(&sel), vec![(0, 0, 0)]);
        // No action: the packet goes on into the stack.
        let msg = filter_message(
            3,
            &Redirect::Pass {
                dst: ip("198.18.1.1"),
                prefix: 32,
            },
            9,
            &RedirectOptions::default(),
        );
        let options = u32_options(&msg);
        assert!(
            !options
                .iter()
                .any(|o| matches!(o, TcOption::U32(TcFilterU32Option::Action(_))))
        );
    }

    #[test]
    fn filter_message_is_an_ingress_u32_with_a_mirred_redirect() {
        let opts = RedirectOptions::default();
        let msg = filter_message(7, &Redirect::Local(ip("fd00:1b5::3:1")), 42, &opts);
        assert_eq!(msg.header.index, 7);
        assert_eq!(
            msg.header.parent,
            TcHandle {
                major: 0xffff,
                minor: 0xfff2
            }
        );
        // IPv6 filters sit one priority above the IPv4 ones; the protocol is big-endian.
        assert_eq!(msg.header.info >> 16, u32::from(DEFAULT_PRIORITY) + 1);
        assert_eq!((msg.header.info & 0xffff) as u16, ETH_P_IPV6.to_be());
        let options = u32_options(&msg);
        let action = options
            .iter()
            .find_map(|o| match o {
                TcOption::U32(TcFilterU32Option::Action(a)) => Some(a),
                _ => None,
            })
            .expect("an action");
        let mirror = action[0]
            .attributes
            .iter()
            .find_map(|a| match a {
                TcActionAttribute::Options(o) => o.iter().find_map(|o| match o {
                    TcActionOption::Mirror(TcActionMirrorOption::Parms(m)) => Some(m),
                    _ => None,
                }),
                _ => None,
            })
            .expect("mirred parameters");
        assert_eq!(mirror.ifindex, 42);
        assert_eq!(mirror.eaction, TcMirrorActionType::EgressRedir);
        assert_eq!(mirror.generic.action, TcActionType::Stolen);
    }
}
