//! `GET /metrics`: the Prometheus text format, on the web listener (no
//! second server). Open to clients in `[metrics] allowed_networks` (by
//! default this machine only), or to a request that carries
//! `Authorization: Bearer <[metrics] bearer_token>`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::client::{TrustedProxies, client_ip};

/// Who may read `/metrics`.
#[derive(Debug, Clone)]
pub struct MetricsAccess {
    /// Client networks that may (the client as `[web] trusted_proxies`
    /// resolve it). Empty: none by address.
    pub networks: TrustedProxies,
    /// A bearer token that may, from anywhere; `None`: no token.
    pub bearer_token: Option<String>,
}

impl Default for MetricsAccess {
    /// This machine only.
    fn default() -> Self {
        MetricsAccess {
            networks: TrustedProxies(vec![
                (IpAddr::V4(Ipv4Addr::LOCALHOST), 8),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            ]),
            bearer_token: None,
        }
    }
}

impl MetricsAccess {
    fn allows(&self, ip: IpAddr, headers: &HeaderMap) -> bool {
        if self.networks.contains(ip) {
            return true;
        }
        let Some(expected) = &self.bearer_token else {
            return false;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Compared as hashes: equal-length inputs, no early exit on the secret.
        given.is_some_and(|g| Sha256::digest(g) == Sha256::digest(expected))
    }
}

pub(crate) async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    if !state.metrics_access().allows(ip, &headers) {
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "forbidden: /metrics is open to [metrics] allowed_networks, or with the [metrics] bearer_token\n",
        )
            .into_response();
    }
    let gauges = state.store().metrics_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        veto_store::metrics::render(&gauges),
    )
        .into_response()
}
