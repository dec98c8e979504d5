//! NAT (masquerading, ipvsadm `-m`): the destination of client packets becomes the real
//! server; the source of replies becomes the virtual service. The client's address is kept, so
//! the real server's replies must come back through the director (reply-steering rules).

use crate::conntrack::Conn;
use crate::path::Ip;
use crate::{PacketBuf, Verdict};

/// Client -> real server: only the destination changes.
pub(crate) fn to_dest(conn: &Conn, pkt: &mut PacketBuf<'_>, ip: &Ip) -> Verdict {
    let csum = pkt.offload().csum;
    let (o, r) = (&conn.orig, &conn.reply);
    super::rewrite(
        pkt.data_mut(),
        ip,
        o.proto,
        csum,
        (o.src, o.sport),
        (r.src, r.sport),
    );
    super::forward(pkt, ip.total)
}

/// Real server -> client: only the source changes.
pub(crate) fn to_client(conn: &Conn, pkt: &mut PacketBuf<'_>, ip: &Ip) -> Verdict {
    let csum = pkt.offload().csum;
    let (o, r) = (&conn.orig, &conn.reply);
    super::rewrite(
        pkt.data_mut(),
        ip,
        o.proto,
        csum,
        (o.dst, o.dport),
        (r.dst, r.dport),
    );
    super::forward(pkt, ip.total)
}
