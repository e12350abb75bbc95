//! Where a webhook may send (docs/events.md#ssrf): an `http` or `https` URL whose host
//! resolves only to public addresses. Loopback, private, link-local (the cloud metadata
//! service at 169.254.169.254 among them), shared, unspecified, broadcast and multicast
//! addresses, and their IPv6 kin, are refused when the endpoint is created or changed and
//! again at every delivery (DNS may change), unless `[webhooks] allow_private_networks`.
//! A delivery connects to the addresses it checked, so a name cannot resolve differently
//! between the check and the connection.
use reqwest::Url;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A webhook URL as given: `http`/`https`, a host, no credentials, at most 2,000 bytes.
pub fn parse(raw: &str) -> Result<Url, String> {
    if raw.len() > 2000 {
        return Err("url must be at most 2000 characters".into());
    }
    let url = Url::parse(raw).map_err(|e| format!("url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url must be http:// or https://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("url must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    Ok(url)
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

/// Whether tenantd refuses to send to `ip` (without `allow_private_networks`).
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// Resolves `url`'s host and checks every address; the addresses to connect to.
pub async fn resolve(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("url: the host {host} does not resolve: {e}"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("url: the host {host} does not resolve"));
    }
    if !allow_private {
        if let Some(a) = addrs.iter().find(|a| forbidden(a.ip())) {
            return Err(format!(
                "url: {host} resolves to {}, a loopback, private, link-local or metadata address (set [webhooks] allow_private_networks to allow it)",
                a.ip()
            ));
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_refused_public_ones_not() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!forbidden(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(parse("https://hooks.example.com/x").is_ok());
        for bad in ["ftp://x.example", "https://user:pw@x.example/", "not a url", "http://"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn loopback_names_and_literals_are_refused_unless_allowed() {
        for url in ["http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]:9/"] {
            let u = parse(url).unwrap();
            assert!(resolve(&u, false).await.is_err(), "{url}");
            assert!(!resolve(&u, true).await.unwrap().is_empty(), "{url} allowed");
        }
    }
}
