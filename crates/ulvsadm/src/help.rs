//! The `--help` and `--version` texts.

/// `ulvsadm --version`.
pub fn version() -> String {
    format!(
        "ulvsadm {} (ipvsadm-compatible client for ulvsd, IPVS v1.2.1 formats)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `ulvsadm --help`.
pub fn usage() -> String {
    let mut s = version();
    s.push_str(
        "\
Usage:
  ulvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [--ops]
  ulvsadm -D virtual-service
  ulvsadm -C
  ulvsadm -a|e virtual-service -r server-address [-g|-i|-m|--fullnat] [-w weight] [-x upper] [-y lower]
  ulvsadm -d virtual-service -r server-address
  ulvsadm -L|l [virtual-service] [-n] [--nosort] [-o text|json] [--stats|--rate|--tun-info] [--exact]
  ulvsadm -L|l -c|--timeout [-n]
  ulvsadm -Z [virtual-service]
  ulvsadm --set tcp tcpfin udp
  ulvsadm -S [-n] [--nosort]
  ulvsadm -R
  ulvsadm --explain virtual-service --client address:port [-o text|json]
  ulvsadm -h|--help
  ulvsadm -v|--version
Without arguments, ulvsadm lists the table (like -L). The command must come first;
short options may be grouped (-Ln, -At 198.18.0.1:80).

Commands:
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options (unset options get defaults)
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options (unset options get defaults)
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --save            -S        save the table as rules (with thresholds) on standard output
  --restore         -R        apply rules from standard input, all of them or none
  --zero            -Z        zero counters of a service or of all services
  --set tcp tcpfin udp        set connection timeout values (seconds; 0 keeps a value)
  --explain                   which real server a new connection from --client would get, and
                              why (existing connection, persistence template, or the
                              scheduler's reasoning); changes nothing
  --help            -h        display this help message
  --version         -v        display the version

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port] or [ipv6]:port
  --udp-service|-u  service-address   service-address is host[:port] or [ipv6]:port
                                      (port: number or /etc/services name; 0 only if persistent)

Options:
  --scheduler    -s scheduler         rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos,
                                      the default scheduler is wlc.
  --persistent   -p [timeout]         persistent service (timeout 1..2678400 s, default 360)
  --netmask      -M netmask           persistent granularity mask (IPv4: dotted, IPv6: prefix length)
  --sched-flags  -b flags             scheduler flags (comma-separated): flag-1, flag-2, flag-3,
                                      sh-fallback, sh-port (sh), mh-fallback, mh-port (mh)
  --ops          -o                   one-packet scheduling (UDP only; with -A/-E)
  --real-server  -r server-address    server-address is host[:port]; the port defaults to the
                                      service port, and -g/-i always use the service port
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --tun-type     type                 with -i: one of ipip|gue|gre (default ipip)
  --tun-port     port                 with --tun-type gue: the GUE destination port
  --tun-nocsum                        with gue/gre: no tunnel checksum (default)
  --tun-csum                          with gue/gre: tunnel checksum
  --tun-remcsum                       with gue: remote checksum offload
  --masquerading -m                   masquerading (NAT)
  --fullnat                           full NAT (destination and source rewritten)
  --weight       -w weight            capacity of real server (0..65535, default 1)
  --u-threshold  -x uthreshold        upper threshold of connections (0 = none)
  --l-threshold  -y lthreshold        lower threshold of connections (0 = none)
  --numeric      -n                   numeric output of addresses and ports
  --nosort                            disable sorting output of service/server entries
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --stats                             output of statistics information
  --rate                              output of rate information
  --tun-info                          output of tunnel information
  --exact        -X                   expand numbers (display exact values)
  --sort                              does nothing, for backwards compatibility
  --output       -o text|json         with -L and --explain: output format (json: the data)

ulvs options:
  --client       address:port         with --explain: the client asking (the service's family)
  --socket PATH                       ulvsd's control socket; default $ULVS_SOCKET,
                                      else /run/ulvs/ulvsd.sock

Without -n, ports are shown by their /etc/services names and addresses by their /etc/hosts
names; ulvsadm never asks DNS while listing.

Exit status: 0 on success, 1 if ulvsd is unreachable or refuses the request, 2 for a usage
error (as ipvsadm).
",
    );
    s
}
