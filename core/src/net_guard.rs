//! Which addresses an image fetch may connect to: a pure classification of IP addresses, and the policy that
//! combines it with the configured allow-list (`IMGPIPE_FETCH_ALLOW_CIDRS`).
//!
//! Everything that is not a public unicast address is refused: loopback, private, link-local (including the
//! cloud metadata address 169.254.169.254), carrier-grade NAT, unique-local, multicast, unspecified, broadcast,
//! documentation, benchmarking and reserved ranges. IPv6 forms that carry an IPv4 address (IPv4-mapped,
//! IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address they carry.
//!
//! Ports: a public address may be fetched from on the allowed ports only (`IMGPIPE_FETCH_ALLOW_PORTS`, default 80
//! and 443); an address inside the allow-list on any port.
//!
//! Nothing here performs I/O; [`crate::fetch`] applies it to resolved addresses and to IP-literal URLs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The class of a refused address, or `None` for a public address that may be fetched from.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    let class = match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "reserved (this network, 0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, 169) if d == 254 => "link-local (cloud metadata)",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "carrier-grade NAT",
        (192, 0, 0) => "reserved (IETF protocol assignments)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (192, 88, 99) => "reserved (6to4 relay anycast)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let class = match s[0] {
        0x0064 if s[1] == 0xff9b && s[2] == 0x0001 => "reserved (local-use NAT64)",
        0x0100 if s[1..4] == [0, 0, 0] => "reserved (discard-only)",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] < 0x0200 => "reserved (IETF protocol assignments)",
        0x3fff if s[1] < 0x1000 => "documentation",
        0x5f00 => "reserved (SRv6)",
        0xfc00..=0xfdff => "unique-local",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        // Only 2000::/3 is allocated for global unicast; everything else is reserved.
        x if !(0x2000..=0x3fff).contains(&x) => "reserved",
        _ => return None,
    };
    Some(class)
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:AABB:CCDD::/48`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// Ports an image fetch may use on a public address unless configured (`IMGPIPE_FETCH_ALLOW_PORTS`).
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The destinations an image fetch may reach: every public address on an allowed port, plus any port of the
/// configured allow-list (trusted by configuration, like the local stack's loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub allow: Vec<IpNet>,
    pub ports: Vec<u16>,
}

impl Default for Policy {
    fn default() -> Self {
        Self { allow: Vec::new(), ports: DEFAULT_PORTS.to_vec() }
    }
}

/// Parses a comma-separated list of ports (`80, 443, 8080`); `None` or an empty string gives [`DEFAULT_PORTS`].
pub fn parse_ports(list: Option<&str>) -> Result<Vec<u16>, String> {
    let ports = list
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|p| p.parse::<u16>().ok().filter(|&n| n > 0).ok_or_else(|| format!("`{p}` is not a port (1-65535)")))
        .collect::<Result<Vec<u16>, String>>()?;
    Ok(if ports.is_empty() { DEFAULT_PORTS.to_vec() } else { ports })
}

impl Policy {
    /// Parses a comma-separated list of CIDRs (`127.0.0.0/8, ::1/128`); a bare address means that address only.
    /// `None` or an empty string allows nothing beyond public addresses.
    pub fn parse(allow_cidrs: Option<&str>) -> Result<Self, String> {
        let mut allow = Vec::new();
        for item in allow_cidrs.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(e) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(format!("`{item}` is not a CIDR: {e}")),
                },
            };
            allow.push(net);
        }
        Ok(Self { allow, ports: DEFAULT_PORTS.to_vec() })
    }

    /// The same policy with these ports allowed on public addresses.
    pub fn with_ports(self, ports: Vec<u16>) -> Self {
        Self { ports, ..self }
    }

    /// Whether `port` is allowed on every address the address rules allow.
    pub fn port_allowed(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// `Ok` when a fetch may connect to `ip` on `port`: the address rules of [`Policy::check`], and a port from
    /// the allowed list unless the allow-list covers `ip`. The reason names every rule the target breaks.
    pub fn check_target(&self, ip: IpAddr, port: u16) -> Result<(), String> {
        let address = self.check(ip).err();
        let port = (!self.port_allowed(port) && !self.is_allowed_explicitly(ip))
            .then(|| format!("refused port {port} of {ip} (allowed: {:?} or an allow-listed address)", self.ports));
        match (address, port) {
            (None, None) => Ok(()),
            (Some(reason), None) | (None, Some(reason)) => Err(reason),
            (Some(address), Some(port)) => Err(format!("{address}; {port}")),
        }
    }

    /// Whether an explicit allow-list entry covers `ip` (an IPv4-mapped address counts as its IPv4 address).
    pub fn is_allowed_explicitly(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow.iter().any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4)))
    }

    /// `Ok` when a fetch may connect to `ip`; otherwise the reason, e.g. `refused address 10.0.0.1 (private)`.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        if self.is_allowed_explicitly(ip) {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(class) => Err(format!("refused address {ip} ({class})")),
        }
    }
}

/// The IP address of a URL whose host is an IP literal (after the `url` crate's normalisation, which turns
/// `http://2130706433/` and `http://0177.0.0.1/` into `127.0.0.1`); `None` for a domain name.
pub fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        classify(s.parse().unwrap())
    }

    fn assert_refused(cases: &[&str], expected: &str) {
        for case in cases {
            assert_eq!(class(case), Some(expected), "{case}");
        }
    }

    #[test]
    fn ipv4_loopback() {
        assert_refused(&["127.0.0.1", "127.0.0.2", "127.255.255.254", "127.255.255.255"], "loopback");
    }

    #[test]
    fn ipv4_private() {
        assert_refused(
            &["10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1", "192.168.255.255"],
            "private",
        );
        assert_eq!(class("172.15.255.255"), None);
        assert_eq!(class("172.32.0.0"), None);
        assert_eq!(class("11.0.0.0"), None);
        assert_eq!(class("192.169.0.0"), None);
    }

    #[test]
    fn ipv4_link_local_and_cloud_metadata() {
        assert_refused(&["169.254.0.1", "169.254.255.255", "169.254.169.253"], "link-local");
        assert_eq!(class("169.254.169.254"), Some("link-local (cloud metadata)"));
        assert!(class("169.254.169.254").unwrap().starts_with("link-local"));
    }

    #[test]
    fn ipv4_carrier_grade_nat() {
        assert_refused(&["100.64.0.0", "100.100.100.200", "100.127.255.255"], "carrier-grade NAT");
        assert_eq!(class("100.63.255.255"), None);
        assert_eq!(class("100.128.0.0"), None);
    }

    #[test]
    fn ipv4_multicast_unspecified_broadcast_this_network() {
        assert_refused(&["224.0.0.1", "239.255.255.250"], "multicast");
        assert_eq!(class("0.0.0.0"), Some("unspecified"));
        assert_eq!(class("255.255.255.255"), Some("broadcast"));
        assert_refused(&["0.0.0.1", "0.255.255.255"], "reserved (this network, 0.0.0.0/8)");
    }

    #[test]
    fn ipv4_documentation_benchmarking_reserved() {
        assert_refused(&["192.0.2.1", "198.51.100.7", "203.0.113.255"], "documentation");
        assert_refused(&["198.18.0.1", "198.19.255.255"], "benchmarking");
        assert_eq!(class("198.17.255.255"), None);
        assert_eq!(class("198.20.0.0"), None);
        assert_refused(&["192.0.0.1", "192.0.0.170"], "reserved (IETF protocol assignments)");
        assert_refused(&["240.0.0.1", "250.1.2.3", "255.255.255.254"], "reserved");
        assert_refused(&["192.88.99.1"], "reserved (6to4 relay anycast)");
    }

    #[test]
    fn ipv4_public_allowed() {
        for ip in ["8.8.8.8", "1.1.1.1", "93.184.216.34", "151.101.1.69", "192.0.3.1", "223.255.255.255"] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv6_loopback_unspecified() {
        assert_eq!(class("::1"), Some("loopback"));
        assert_eq!(class("::"), Some("unspecified"));
    }

    #[test]
    fn ipv6_unique_local_link_local_site_local() {
        assert_refused(&["fc00::1", "fd00::1", "fd12:3456:789a::1", "fdff:ffff::1"], "unique-local");
        assert_refused(&["fe80::1", "fe80::1ff:fe23:4567:890a", "febf::1"], "link-local");
        assert_refused(&["fec0::1", "feff::1"], "site-local");
    }

    #[test]
    fn ipv6_multicast() {
        assert_refused(&["ff02::1", "ff05::1:3", "ff0e::1", "ffff::1"], "multicast");
    }

    #[test]
    fn ipv6_documentation_and_reserved() {
        assert_refused(&["2001:db8::1", "2001:db8:ffff::1", "3fff::1", "3fff:fff::1"], "documentation");
        assert_refused(&["2001::1", "2001:0:4136:e378::1", "2001:1ff::1"], "reserved (IETF protocol assignments)");
        assert_refused(&["100::1"], "reserved (discard-only)");
        assert_refused(&["64:ff9b:1::a00:1"], "reserved (local-use NAT64)");
        assert_refused(&["5f00::1"], "reserved (SRv6)");
        assert_refused(&["1::1", "4000::1", "e000::1", "::1:0:0:1"], "reserved");
    }

    #[test]
    fn ipv6_public_allowed() {
        for ip in
            ["2606:4700::1", "2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001::200e", "3fff:1000::1"]
        {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv4_mapped_is_judged_by_its_ipv4() {
        assert_eq!(class("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(class("::ffff:7f00:1"), Some("loopback"));
        assert_eq!(class("::ffff:10.1.2.3"), Some("private"));
        assert_eq!(class("::ffff:172.16.0.1"), Some("private"));
        assert_eq!(class("::ffff:192.168.1.1"), Some("private"));
        assert_eq!(class("::ffff:169.254.169.254"), Some("link-local (cloud metadata)"));
        assert_eq!(class("::ffff:100.64.0.1"), Some("carrier-grade NAT"));
        assert_eq!(class("::ffff:0.0.0.0"), Some("unspecified"));
        assert_eq!(class("::ffff:224.0.0.1"), Some("multicast"));
        assert_eq!(class("::ffff:255.255.255.255"), Some("broadcast"));
        assert_eq!(class("::ffff:8.8.8.8"), None);
    }

    #[test]
    fn ipv4_compatible_nat64_and_6to4_are_judged_by_their_ipv4() {
        assert_eq!(class("::127.0.0.1"), Some("loopback"));
        assert_eq!(class("::10.0.0.1"), Some("private"));
        assert_eq!(class("::169.254.169.254"), Some("link-local (cloud metadata)"));
        assert_eq!(class("::0.0.0.2"), Some("reserved (this network, 0.0.0.0/8)"));
        assert_eq!(class("::8.8.8.8"), None);
        assert_eq!(class("64:ff9b::127.0.0.1"), Some("loopback"));
        assert_eq!(class("64:ff9b::a9fe:a9fe"), Some("link-local (cloud metadata)"));
        assert_eq!(class("64:ff9b::192.168.0.1"), Some("private"));
        assert_eq!(class("64:ff9b::100.64.0.1"), Some("carrier-grade NAT"));
        assert_eq!(class("64:ff9b::8.8.8.8"), None);
        assert_eq!(class("2002:7f00:1::1"), Some("loopback"));
        assert_eq!(class("2002:a9fe:a9fe::"), Some("link-local (cloud metadata)"));
        assert_eq!(class("2002:c0a8:101::1"), Some("private"));
        assert_eq!(class("2002:808:808::1"), None);
    }

    #[test]
    fn url_normalises_ipv4_spellings_before_classification() {
        let cases = [
            ("http://2130706433/", "127.0.0.1", "loopback"),
            ("http://0177.0.0.1/", "127.0.0.1", "loopback"),
            ("http://0x7f.0.0.1/", "127.0.0.1", "loopback"),
            ("http://0x7f000001/", "127.0.0.1", "loopback"),
            ("http://127.1/", "127.0.0.1", "loopback"),
            ("http://017700000001/", "127.0.0.1", "loopback"),
            ("http://0/", "0.0.0.0", "unspecified"),
            ("http://10.1/", "10.0.0.1", "private"),
            ("http://0xa9fea9fe/", "169.254.169.254", "link-local (cloud metadata)"),
            ("http://2852039166/", "169.254.169.254", "link-local (cloud metadata)"),
            ("http://0251.0376.0251.0376/", "169.254.169.254", "link-local (cloud metadata)"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "loopback"),
            ("http://[::ffff:a9fe:a9fe]/", "::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("http://[0:0:0:0:0:0:0:1]/", "::1", "loopback"),
        ];
        for (url, ip, expected) in cases {
            let parsed = url::Url::parse(url).unwrap();
            let literal = literal_ip(&parsed).unwrap_or_else(|| panic!("{url} is not an IP literal"));
            assert_eq!(literal, ip.parse::<IpAddr>().unwrap(), "{url}");
            assert_eq!(classify(literal), Some(expected), "{url}");
        }
        assert_eq!(literal_ip(&url::Url::parse("http://localhost/").unwrap()), None);
        assert_eq!(literal_ip(&url::Url::parse("http://cdn.example.com/a.jpg").unwrap()), None);
    }

    #[test]
    fn policy_refuses_with_the_class_in_the_message() {
        let policy = Policy::parse(None).unwrap();
        assert_eq!(policy.check("10.0.0.1".parse().unwrap()), Err("refused address 10.0.0.1 (private)".into()));
        assert_eq!(
            policy.check("169.254.169.254".parse().unwrap()),
            Err("refused address 169.254.169.254 (link-local (cloud metadata))".into())
        );
        assert_eq!(policy.check("::1".parse().unwrap()), Err("refused address ::1 (loopback)".into()));
        assert!(policy.check("8.8.8.8".parse().unwrap()).is_ok());
        assert!(policy.check("2606:4700::1".parse().unwrap()).is_ok());
        assert_eq!(Policy::parse(Some("")).unwrap(), Policy::default());
        assert_eq!(Policy::parse(Some(" , ")).unwrap(), Policy::default());
    }

    #[test]
    fn policy_allow_list() {
        let policy = Policy::parse(Some("127.0.0.0/8, ::1/128,10.1.2.3")).unwrap();
        assert_eq!(policy.allow.len(), 3);
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("127.9.9.9".parse().unwrap()).is_ok());
        assert!(policy.check("::1".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(policy.check("10.1.2.4".parse().unwrap()).is_err());
        assert!(policy.check("169.254.169.254".parse().unwrap()).is_err());
        assert!(policy.check("192.168.0.1".parse().unwrap()).is_err());
        assert!(policy.check("8.8.8.8".parse().unwrap()).is_ok());

        let narrow = Policy::parse(Some("127.0.0.1/32")).unwrap();
        assert!(narrow.check("127.0.0.1".parse().unwrap()).is_ok());
        assert_eq!(narrow.check("127.0.0.2".parse().unwrap()), Err("refused address 127.0.0.2 (loopback)".into()));
        assert!(narrow.check("::1".parse().unwrap()).is_err());

        // Host bits are accepted and truncated.
        assert_eq!(Policy::parse(Some("127.0.0.1/8")).unwrap().allow, vec!["127.0.0.0/8".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn ports_are_80_and_443_unless_configured_and_any_port_inside_the_allow_list() {
        let public: IpAddr = "8.8.8.8".parse().unwrap();
        let policy = Policy::parse(Some("127.0.0.0/8")).unwrap();
        assert!(policy.check_target(public, 80).is_ok());
        assert!(policy.check_target(public, 443).is_ok());
        for port in [1, 22, 79, 81, 442, 444, 8080, 65535] {
            let err = policy.check_target(public, port).unwrap_err();
            assert!(err.starts_with(&format!("refused port {port} of 8.8.8.8")), "{err}");
        }
        assert!(policy.check_target("127.0.0.1".parse().unwrap(), 8080).is_ok());
        assert!(policy.check_target("::ffff:127.0.0.1".parse().unwrap(), 1).is_ok());
        // the port rule does not open a refused address; a target breaking both rules is told both
        assert!(policy.check_target("10.0.0.1".parse().unwrap(), 80).is_err());
        assert_eq!(
            policy.check_target("10.0.0.1".parse().unwrap(), 8080),
            Err("refused address 10.0.0.1 (private); refused port 8080 of 10.0.0.1 (allowed: [80, 443] or an \
                 allow-listed address)"
                .into())
        );

        let custom = Policy::parse(None).unwrap().with_ports(parse_ports(Some(" 8443,80 ")).unwrap());
        assert!(custom.check_target(public, 8443).is_ok());
        assert!(custom.check_target(public, 443).is_err());
        assert_eq!(parse_ports(None).unwrap(), DEFAULT_PORTS);
        assert_eq!(parse_ports(Some(" , ")).unwrap(), DEFAULT_PORTS);
        for bad in ["0", "65536", "http", "80,-1", "8 0"] {
            assert!(parse_ports(Some(bad)).unwrap_err().contains("is not a port"), "{bad}");
        }
    }

    #[test]
    fn policy_rejects_invalid_cidrs() {
        for bad in ["127.0.0.0/33", "localhost", "10.0.0.0/8,nope", "::1/129", "127.0.0/8", "1.2.3.4/-1"] {
            let err = Policy::parse(Some(bad)).unwrap_err();
            assert!(err.contains("is not a CIDR"), "{bad}: {err}");
        }
    }
}
