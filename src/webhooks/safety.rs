//! Where webhooks may be sent: `https` URLs (or `http` when `webhook_allow_http`), without
//! credentials, to hosts that resolve only to public addresses (unless
//! `webhook_allow_private`). The address check runs at creation and again at every delivery,
//! in the resolver the HTTP client connects through, so a name re-pointed at an internal
//! address after it was checked is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

/// Longest accepted webhook URL.
pub(crate) const MAX_URL_LEN: usize = 2048;

/// Whether `ip` is loopback, private, link-local (cloud metadata lives at 169.254.169.254),
/// shared (CGNAT), unspecified, broadcast, multicast or documentation space, or an IPv6
/// form of one (mapped IPv4, unique local, link-local).
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            internal_v6(v6)
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && ip.segments()[1] == 0xff9b
}

/// Parse and check a webhook URL's form (scheme, host, no credentials); the message says what
/// is wrong.
pub(crate) fn parse_url(raw: &str, allow_http: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("at most {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err("must be https (http is not allowed by the settings)".to_owned()),
        other => return Err(format!("must be https, not {other}")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".to_owned());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".to_owned());
    }
    Ok(url)
}

/// Resolve `url`'s host and refuse it when an address is internal (unless allowed) or it does
/// not resolve.
pub(crate) async fn check_host(url: &Url, allow_private: bool) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::lookup_host((host, port)),
        )
        .await
        .map_err(|_| format!("{host} did not resolve in time"))?
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a loopback, private, link-local or metadata address",
            bad.ip()
        ));
    }
    Ok(())
}

/// The resolver of the delivery client: the system's, minus internal addresses unless they
/// are allowed.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    /// `webhook_allow_private`.
    pub(crate) allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_internal(a.ip()))
                .collect();
            if found.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no address webhooks may be sent to").into();
                return Err(err);
            }
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The delivery client's resolver, shared.
pub(crate) fn resolver(allow_private: bool) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { allow_private })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_recognised() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(bad.parse().unwrap()), "{bad}");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn urls_must_be_https_without_credentials() {
        let cases = [
            ("http://example.com/h", "http is refused unless allowed"),
            ("ftp://example.com/h", "another scheme"),
            (
                "https://user:pw@example.com/h",
                "credentials would be stored and logged",
            ),
            ("not a url", "not a URL"),
            ("https://example.com/h#x", "fragments are never sent"),
        ];
        for (url, why) in cases {
            assert!(parse_url(url, false).is_err(), "{url}: {why}");
        }
        assert!(parse_url("https://example.com/hooks?a=1", false).is_ok());
        assert!(parse_url("http://example.com/h", true).is_ok());
    }
}
