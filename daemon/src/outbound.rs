//! Every call the appliance makes to another host (PBS callbacks, skin
//! webhooks, anything later) goes through one client built here, which
//! refuses internal addresses unless the operator allowed them
//! (`outbound.allow`).
//!
//! Refused always (unless allowed): loopback, link-local (which includes
//! cloud metadata at 169.254.169.254), unspecified, multicast and
//! broadcast, in IPv4 and IPv6, including IPv4-mapped and IPv4-compatible
//! IPv6 forms. Refused by default, since clinics' own systems often sit
//! there and an operator may list them: RFC 1918 private ranges, IPv6
//! unique-local (ULA, fc00::/7) and shared address space (CGNAT,
//! 100.64.0.0/10). Host names are resolved by the client itself and every
//! address is checked at connect time, so a name that resolves to an
//! internal address later (DNS rebinding) is still refused; IP literals
//! in any notation (`2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`) are
//! normalised by the URL parser (WHATWG rules) before the check.
//! Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// What the operator allowed: host names (exact, case-insensitive) and
/// networks (`10.1.2.3`, `10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

/// Why an address or URL was refused; the text is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Policy {
    /// Parse `outbound.allow`. Each entry is a host name, an address or a
    /// network in CIDR notation.
    pub fn new(allow: &[String]) -> Result<Self, String> {
        let mut p = Self::default();
        for entry in allow {
            let e = entry.trim();
            if e.is_empty() {
                return Err("outbound.allow: an entry is empty".into());
            }
            if let Ok(net) = e.parse::<IpNet>() {
                p.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                p.nets.push(IpNet::from(ip));
            } else if e.contains('/') {
                return Err(format!("outbound.allow: {e:?} is not a valid network"));
            } else {
                p.hosts.push(e.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        Ok(p)
    }

    fn host_allowed(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&h)
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether `ip`, reached for `host`, may be connected to.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        let Some(kind) = internal_kind(ip) else {
            return Ok(());
        };
        if self.host_allowed(host) || self.ip_allowed(canonical(ip)) || self.ip_allowed(ip) {
            return Ok(());
        }
        // The address itself is not echoed: callers could map internal DNS.
        Err(Refused(format!(
            "{host} is (or resolves to) a {kind} address; outgoing calls to internal addresses \
             need the operator's permission (outbound.allow)"
        )))
    }

    /// Check a URL before it is accepted (at request time) and before each
    /// call: HTTPS (unless `allow_http`), a host, and every address it
    /// resolves to now allowed.
    pub async fn check_url(&self, url: &str, allow_http: bool) -> Result<reqwest::Url, Refused> {
        let u = reqwest::Url::parse(url).map_err(|e| Refused(format!("not a valid URL: {e}")))?;
        match u.scheme() {
            "https" => {}
            "http" if allow_http => {}
            s => return Err(Refused(format!("the URL must be https, not {s}"))),
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(Refused("the URL must not carry credentials".into()));
        }
        let port = u.port_or_known_default().unwrap_or(443);
        match u.host() {
            None => Err(Refused("the URL has no host".into())),
            Some(url::Host::Ipv4(ip)) => self
                .check_ip(&ip.to_string(), IpAddr::V4(ip))
                .map(|_| u.clone()),
            Some(url::Host::Ipv6(ip)) => self
                .check_ip(&format!("[{ip}]"), IpAddr::V6(ip))
                .map(|_| u.clone()),
            Some(url::Host::Domain(name)) => {
                let name = name.to_string();
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|e| Refused(format!("{name} does not resolve: {e}")))?
                    .collect();
                if addrs.is_empty() {
                    return Err(Refused(format!("{name} does not resolve")));
                }
                for a in &addrs {
                    self.check_ip(&name, a.ip())?;
                }
                Ok(u)
            }
        }
    }
}

/// An IPv4 address written as IPv6 (mapped `::ffff:a.b.c.d` or the old
/// compatible `::a.b.c.d`) is judged as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                if s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1) {
                    IpAddr::V4(Ipv4Addr::new(
                        (s[6] >> 8) as u8,
                        s[6] as u8,
                        (s[7] >> 8) as u8,
                        s[7] as u8,
                    ))
                } else {
                    ip
                }
            }
        },
        v4 => v4,
    }
}

/// The kind of internal address `ip` is, or None for a public one.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() || o[0] == 0 {
        "unspecified (0.0.0.0/8)"
    } else if ip.is_link_local() {
        "link-local (cloud metadata lives here)"
    } else if ip.is_multicast() || o[0] >= 240 {
        "multicast, reserved or broadcast"
    } else if ip.is_private() {
        "private (RFC 1918)"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "shared (CGNAT, 100.64.0.0/10)"
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        "IETF protocol assignment (192.0.0.0/24)"
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        "benchmarking (198.18.0.0/15)"
    } else {
        return None;
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_multicast() {
        "multicast"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "site-local"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "unique local (ULA, fc00::/7)"
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64 embeds an IPv4 address in the last 32 bits.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return v4_kind(v4);
    } else if s[0] == 0x2002 {
        // 6to4 (RFC 3056) embeds an IPv4 address in bits 16-47: a relay
        // would deliver to it.
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return v4_kind(v4);
    } else if s[0] == 0x2001 && s[1] == 0 {
        // Teredo (RFC 4380) hides the client's IPv4 address (XORed); the
        // tunnel can reach behind NATs, so it is never a plain public host.
        "Teredo tunnel (2001::/32)"
    } else {
        return None;
    })
}

/// reqwest's name resolution, with every address checked against the
/// policy at connect time.
struct Resolver(Arc<Policy>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut allowed = Vec::new();
            let mut refusal = None;
            for a in addrs {
                match policy.check_ip(&host, a.ip()) {
                    Ok(()) => allowed.push(a),
                    Err(r) => refusal = Some(r),
                }
            }
            if allowed.is_empty() {
                let r = refusal.unwrap_or_else(|| Refused(format!("{host} does not resolve")));
                return Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The one outgoing HTTP client: the policy's resolver, no redirects,
/// `timeout` per call, extra trusted roots from `ca_file` (PEM) if given.
pub fn client(
    policy: Arc<Policy>,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy from the environment would resolve the target itself,
        // past the policy's resolver.
        .no_proxy()
        .dns_resolver(Arc::new(Resolver(policy)))
        .timeout(timeout)
        .user_agent(concat!("argusd/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file.filter(|p| !p.as_os_str().is_empty()) {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// The chain of causes of an outgoing call's failure, for logs and retry
/// records ("error sending request" alone says nothing).
pub fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &Policy, url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(p.check_url(url, false))
            .expect_err(url)
            .to_string()
    }

    /// The URLs the security review was able to reach, and the other
    /// notations of the same addresses.
    #[test]
    fn internal_addresses_are_refused_in_every_notation() {
        let p = Policy::default();
        for (url, kind) in [
            ("https://127.0.0.1:9999/x", "loopback"),
            ("https://169.254.169.254/", "link-local"),
            ("https://10.0.0.1/", "private"),
            ("https://localhost/", "loopback"),
            ("https://2130706433/", "loopback"),
            ("https://0x7f000001/", "loopback"),
            ("https://0177.0.0.1/", "loopback"),
            ("https://127.1/", "loopback"),
            ("https://0/", "unspecified"),
            ("https://[::1]/", "loopback"),
            ("https://[::]/", "unspecified"),
            ("https://[::ffff:127.0.0.1]/", "loopback"),
            ("https://[::ffff:169.254.169.254]/", "link-local"),
            ("https://[::ffff:a9fe:a9fe]/", "link-local"),
            ("https://[::127.0.0.1]/", "loopback"),
            ("https://[64:ff9b::a9fe:a9fe]/", "link-local"),
            ("https://[2002:7f00:1::]/", "loopback"),
            ("https://[2002:a00:1::1]/", "private"),
            ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
            ("https://[fe80::1]/", "link-local"),
            ("https://[fd00::1]/", "unique local"),
            ("https://[ff02::1]/", "multicast"),
            ("https://224.0.0.1/", "multicast"),
            ("https://255.255.255.255/", "broadcast"),
            ("https://172.16.5.4/", "private"),
            ("https://192.168.1.1/", "private"),
            ("https://100.64.0.1/", "CGNAT"),
        ] {
            let why = refused(&p, url);
            assert!(why.contains(kind), "{url}: {why}");
            assert!(why.contains("outbound.allow"), "{url}: {why}");
        }
    }

    #[test]
    fn only_https_without_credentials() {
        let p = Policy::default();
        assert!(refused(&p, "http://93.184.215.14/").contains("https"));
        assert!(refused(&p, "ftp://93.184.215.14/").contains("https"));
        assert!(refused(&p, "https://u:p@93.184.215.14/").contains("credentials"));
        assert!(refused(&p, "not a url").contains("valid URL"));
    }

    #[test]
    fn public_addresses_pass() {
        let p = Policy::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for url in ["https://93.184.215.14/x", "https://[2606:4700::6810:84e5]/"] {
            rt.block_on(p.check_url(url, false)).expect(url);
        }
    }

    #[test]
    fn the_operator_may_allow_hosts_and_networks() {
        let p =
            Policy::new(&["10.0.0.0/8".into(), "LIS.clinic.local".into(), "::1".into()]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.check_ip("10.2.3.4", ip("10.2.3.4")).is_ok());
        assert!(p.check_ip("lis.clinic.local", ip("192.168.7.7")).is_ok());
        assert!(p.check_ip("[::1]", ip("::1")).is_ok());
        assert!(
            p.check_ip("x", ip("::ffff:10.9.9.9")).is_ok(),
            "mapped form of an allowed net"
        );
        assert!(p.check_ip("x", ip("192.168.7.7")).is_err());
        assert!(p.check_ip("x", ip("127.0.0.1")).is_err());
        assert!(Policy::new(&["10.0.0.0/40".into()]).is_err());
        assert!(Policy::new(&[" ".into()]).is_err());
    }
}
