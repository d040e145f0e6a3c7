//! `GET|POST /api/v1/channels/{channel_id}/messages`, proxied to the messages service.
//!
//! One pooled keep-alive HTTP/1 client per process. The caller's method, path, query, headers
//! (its token and request id included) and body go upstream unchanged, minus hop-by-hop headers;
//! the answer comes back as the messages service gave it. The messages service unreachable is 502
//! `bad_gateway`; no answer within `UPSTREAM_TIMEOUT_MS` is 504 `gateway_timeout`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, Uri, header};
use axum::response::Response;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics::counter;

use common::ApiError;
use common::error::Path;
use common::subject;

use crate::AppState;

/// Idle keep-alive connections kept per upstream host.
const MAX_IDLE_PER_HOST: usize = 256;

/// The messages service as seen from the gateway.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    base: Uri,
    timeout: Duration,
}

impl Upstream {
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        metrics::describe_counter!(
            "gateway_upstream_errors_total",
            "Requests to the messages service that failed without an answer, by kind (unreachable, timeout)."
        );
        common::metrics::register_counters(&[
            ("gateway_upstream_errors_total", &[("kind", "unreachable")]),
            ("gateway_upstream_errors_total", &[("kind", "timeout")]),
        ]);
        let base: Uri = base_url
            .parse()
            .map_err(|e| anyhow::anyhow!("MESSAGES_URL {base_url:?}: {e}"))?;
        if base.authority().is_none() {
            anyhow::bail!("MESSAGES_URL {base_url:?} has no host");
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(connector);
        Ok(Self {
            client,
            base,
            timeout,
        })
    }

    /// Sends `request` to the same path and query on the upstream.
    pub async fn forward(&self, request: Request) -> Result<Response, ApiError> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = self.base.clone().into_parts();
        let prefix = uri
            .path_and_query
            .as_ref()
            .map(|p| p.path().trim_end_matches('/'))
            .unwrap_or("");
        uri.path_and_query = Some(
            format!("{prefix}{path}")
                .parse()
                .map_err(|_| ApiError::bad_request("the request path cannot be forwarded"))?,
        );
        parts.uri = Uri::from_parts(uri).map_err(ApiError::internal)?;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        let answer = tokio::time::timeout(
            self.timeout,
            self.client.request(Request::from_parts(parts, body)),
        )
        .await;
        match answer {
            Ok(Ok(response)) => {
                let mut response = response.map(Body::new);
                strip_hop_by_hop(response.headers_mut());
                Ok(response)
            }
            Ok(Err(e)) => {
                counter!("gateway_upstream_errors_total", "kind" => "unreachable").increment(1);
                tracing::warn!(error = %e, "messages service unreachable");
                Err(ApiError::bad_gateway("the messages service is unreachable"))
            }
            Err(_) => {
                counter!("gateway_upstream_errors_total", "kind" => "timeout").increment(1);
                Err(ApiError::gateway_timeout(format!(
                    "the messages service did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }
}

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Both methods of the channel messages route.
pub async fn channel_messages(
    State(state): State<AppState>,
    Path(channel_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    subject::channel_subject(&channel_id).map_err(ApiError::bad_request)?;
    state.upstream.forward(request).await
}
