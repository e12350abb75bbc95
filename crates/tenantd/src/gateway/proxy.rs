//! What the gateway does to a proxied request's and response's headers, and the tunnel
//! of an upgraded connection.
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// Whether the request asks for a protocol upgrade (WebSocket).
pub(super) fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), and those the `Connection` header
/// names; `Connection: upgrade` and `Upgrade` stay when an upgrade goes through.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap, upgrading: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrading && n == header::UPGRADE))
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "proxy-authorization",
        "proxy-authenticate",
    ] {
        h.remove(n);
    }
    if upgrading {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
}

/// Removes every identity header a client could send to pose as a tenant or principal.
pub(super) fn strip_identity(h: &mut HeaderMap) {
    let spoofable: Vec<HeaderName> = h
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n.starts_with("x-tenant-")
                || n.starts_with("x-principal-")
                || matches!(
                    n,
                    "tenant-id" | "x-request-id" | "x-forwarded-proto" | "x-forwarded-host"
                )
        })
        .cloned()
        .collect();
    for n in spoofable {
        h.remove(n);
    }
}

/// `X-Forwarded-For` gets the peer appended (as nginx's `$proxy_add_x_forwarded_for`);
/// `-Proto` and `-Host` are set from what the gateway saw.
pub(super) fn set_forwarded(h: &mut HeaderMap, peer: SocketAddr, original_host: Option<HeaderValue>) {
    let ip = peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(host) = original_host {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

/// Copies bytes both ways between the client and the upstream once both have upgraded.
pub(super) async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection closed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "protocol upgrade through the gateway failed"),
    }
}
