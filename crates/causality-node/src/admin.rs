//! The admin endpoint on 127.0.0.1, on hyper and axum with tower's limits: `/health` and
//! `/metrics` (Prometheus text) for anyone on the host, and behind the admin token
//! `/status` (JSON) and two operator actions used by the devnet, `POST /publish` and
//! `POST /request` (parameters in the query string).
//!
//! What a hostile web page or local process meets:
//! - the token: 32 random bytes in `DATA_DIR/admin.cookie` (mode 0600), new at every start,
//!   as Bitcoin Core's `.cookie`; sent as `Authorization: Bearer <token>` or a
//!   `causality_admin` cookie, compared in constant time;
//! - a Host check (DNS rebinding: a page on `evil.example` that resolves to 127.0.0.1 is
//!   refused) and an Origin check (a cross-site POST is refused even before the token);
//! - header and whole-request timeouts, a connection cap, one request per connection, and
//!   a backoff when `accept` fails (out of file descriptors) instead of a busy loop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use causality_log::LogStore as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;

use crate::node::{Node, ProtocolStats};

/// The token file in the data directory.
pub(crate) const COOKIE_FILE: &str = "admin.cookie";
/// The cookie name a browser may carry the token in.
const COOKIE_NAME: &str = "causality_admin";

/// Limits of the admin endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub(crate) connections: usize,
    /// A client must send its request head within this long.
    pub(crate) header_timeout: Duration,
    /// A request must be answered within this long (an echo request waits on the network).
    pub(crate) request_timeout: Duration,
    /// A connection lives this long at most, whatever the client does.
    pub(crate) connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 64,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            connection_timeout: Duration::from_secs(30),
        }
    }
}

/// The admin token: written at start, read by the CLI.
#[derive(Clone)]
pub(crate) struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A fresh random token, written to `data_dir/admin.cookie` readable by the owner only
    /// (through a uniquely named temporary file and a rename, so a reader never sees half).
    pub(crate) fn create(data_dir: &Path) -> Result<Self> {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = Self(hex(&bytes));
        let mut file = tempfile::Builder::new()
            .prefix(".admin.cookie.")
            .tempfile_in(data_dir)
            .with_context(|| format!("cannot write the admin token in {}", data_dir.display()))?;
        std::io::Write::write_all(&mut file, format!("{}\n", token.0).as_bytes())?;
        // tempfile creates the file with mode 0600.
        file.persist(data_dir.join(COOKIE_FILE))
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write the admin token in {}", data_dir.display()))?;
        Ok(token)
    }

    /// The token of the node running in `data_dir`.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the admin token {} (is the node running, and are you its owner?)",
                path.display()
            )
        })?;
        Ok(Self(text.trim().to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (BLAKE3 hashes compare in constant time).
    fn matches(&self, candidate: &str) -> bool {
        blake3::hash(self.0.as_bytes()) == blake3::hash(candidate.as_bytes())
    }
}

/// What the request guard checks against.
#[derive(Clone, Debug)]
struct Guard {
    token: Token,
    /// `Host` values accepted: 127.0.0.1, localhost and `[::1]` with our port.
    hosts: Arc<[String]>,
}

impl Guard {
    fn new(token: Token, port: u16) -> Self {
        let hosts = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        Self { token, hosts }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|host| self.host_allowed(host))
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|t| self.token.matches(t.trim())) {
            return true;
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE_NAME && self.token.matches(v))
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (status, body).into_response()
}

/// Host and Origin checks for every request; the token for all but `/health` and `/metrics`.
async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match host {
        Some(host) if guard.host_allowed(host) => {}
        Some(host) => {
            tracing::warn!(target: "causality_node", host, "admin request with a foreign Host header refused");
            return text(StatusCode::MISDIRECTED_REQUEST, "host not allowed");
        }
        None => return text(StatusCode::BAD_REQUEST, "a Host header is required"),
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !guard.origin_allowed(origin) {
            tracing::warn!(target: "causality_node", origin, "cross-origin admin request refused");
            return text(
                StatusCode::FORBIDDEN,
                "cross-origin requests are not allowed",
            );
        }
    }
    let open = matches!(request.uri().path(), "/health" | "/metrics");
    if !open && !guard.authorized(headers) {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            format!("the admin token is required (DATA_DIR/{COOKIE_FILE})"),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"causality-node\""),
        );
        return response;
    }
    next.run(request).await
}

#[derive(Debug, Deserialize)]
struct PublishParams {
    topic: Option<String>,
    payload: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SequenceParams {
    id: Option<String>,
}

fn json_response(value: &serde_json::Value) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct RequestParams {
    peer: Option<String>,
    body: Option<String>,
}

fn router(node: Arc<Node>, guard_state: Guard, limits: Limits) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/status",
            get(|State(node): State<Arc<Node>>| async move {
                let stats = node.protocols.stats().await;
                match serde_json::to_string_pretty(&status(&node, &stats)) {
                    Ok(body) => {
                        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(node): State<Arc<Node>>| async move {
                let stats = node.protocols.stats().await;
                match metrics(&node, &stats) {
                    Ok(body) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
                }
            }),
        )
        .route(
            "/publish",
            post(
                |State(node): State<Arc<Node>>, Query(p): Query<PublishParams>| async move {
                    let (Some(topic), Some(payload)) = (p.topic, p.payload) else {
                        return text(StatusCode::BAD_REQUEST, "topic and payload are required");
                    };
                    match node.publish(&topic, &payload).await {
                        Ok(id) => text(StatusCode::OK, id),
                        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e:#}")),
                    }
                },
            ),
        )
        .route(
            "/request",
            post(
                |State(node): State<Arc<Node>>, Query(p): Query<RequestParams>| async move {
                    let (Some(peer), Some(body)) = (p.peer, p.body) else {
                        return text(StatusCode::BAD_REQUEST, "peer and body are required");
                    };
                    match node.echo(&peer, &body).await {
                        Ok(answer) => text(StatusCode::OK, answer),
                        Err(e) => text(StatusCode::BAD_GATEWAY, format!("{e:#}")),
                    }
                },
            ),
        )
        .route(
            "/modules",
            post(|State(node): State<Arc<Node>>, body: Bytes| async move {
                match node.modules.add(&node.engine, &body) {
                    Ok(id) => json_response(&json!({ "module": id.to_string() })),
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e:#}")),
                }
            }),
        )
        .route(
            "/exec/sequences",
            post(|State(node): State<Arc<Node>>, body: Bytes| async move {
                let Some(exec) = &node.protocols.exec else {
                    return text(StatusCode::CONFLICT, "execution is disabled on this node");
                };
                let file: crate::work::SequenceFile = match serde_json::from_slice(&body) {
                    Ok(file) => file,
                    Err(e) => {
                        return text(StatusCode::BAD_REQUEST, format!("not a sequence: {e}"));
                    }
                };
                let sequence = match file.to_sequence(node.network.local_peer_id()) {
                    Ok(sequence) => sequence,
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e:#}")),
                };
                match exec.announce_sequence(sequence).await {
                    Ok(id) => json_response(&json!({ "sequence": id.to_string() })),
                    Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
                }
            }),
        )
        .route(
            "/exec/sequence",
            get(
                |State(node): State<Arc<Node>>, Query(p): Query<SequenceParams>| async move {
                    let Some(id) = p.id.and_then(|id| id.parse().ok()) else {
                        return text(StatusCode::BAD_REQUEST, "id: a sequence id is required");
                    };
                    match node.sequences.describe(&id) {
                        Some(shown) => json_response(&shown),
                        None => text(StatusCode::NOT_FOUND, "no such sequence known here"),
                    }
                },
            ),
        )
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found") })
        .with_state(node)
        .layer(middleware::from_fn_with_state(guard_state, guard))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: tower::BoxError| async move {
                    if e.is::<tower::timeout::error::Elapsed>() {
                        text(StatusCode::GATEWAY_TIMEOUT, "the request took too long")
                    } else {
                        text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    }
                }))
                .timeout(limits.request_timeout),
        )
}

/// Serves the admin endpoint on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, node: Arc<Node>, token: Token, limits: Limits) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let app = router(node, Guard::new(token, port), limits);
    accept_loop(|| listener.accept(), app, limits).await;
}

/// Accepts connections while fewer than `limits.connections` are open, and serves each
/// with `app`. A failing `accept` (no file descriptors left, say) is logged and retried
/// after a growing pause, never in a busy loop.
async fn accept_loop<A, F>(mut accept: A, app: Router, limits: Limits)
where
    A: FnMut() -> F,
    F: Future<Output = std::io::Result<(TcpStream, SocketAddr)>>,
{
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut backoff = Duration::ZERO;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match accept().await {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(target: "causality_node", error = %e, retry_in_ms = backoff.as_millis() as u64, "admin endpoint cannot accept");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_timeout, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(target: "causality_node", error = %e, "admin connection failed");
                }
                Err(_) => {
                    tracing::debug!(target: "causality_node", "admin connection timed out");
                }
            }
        });
    }
}

pub(crate) fn status(node: &Node, stats: &ProtocolStats) -> serde_json::Value {
    let net = &node.network;
    let head = node.log.head();
    json!({
        "peer_id": net.local_peer_id().to_string(),
        "version": net.hello().version.to_string(),
        "agent": net.hello().agent,
        "listen": net.listen_addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "peers": net.peers().iter().map(|p| json!({
            "peer": p.peer.to_string(),
            "version": p.agreement.map(|a| a.version.to_string()),
            "agent": p.agent,
            "score": p.score,
        })).collect::<Vec<_>>(),
        "bans": net.bans().iter().map(|(peer, until)| json!({
            "peer": peer.to_string(),
            "until_ms": until,
        })).collect::<Vec<_>>(),
        "next_seq": net.next_seq(),
        "view": node.discovery.members().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "topics": node.received(),
        "log": { "size": head.size, "root": hex(&head.root) },
        "uptime_s": node.started.elapsed().as_secs(),
        "proofs": stats.proofs.as_ref().map(|p| json!({
            "verified": p.verified,
            "rejected": p.rejected,
            "cache_hits": p.cache_hits,
            "batches": p.batches,
            "batched_proofs": p.batched_proofs,
            "keys_fetched": p.keys_fetched,
            "proofs_pulled": p.proofs_pulled,
            "attested": p.attested,
            "acks_received": p.acks_received,
            "store_errors": p.store_errors,
        })),
        "registers": stats.registers.as_ref().map(|r| json!({
            "deltas_applied": r.deltas_applied,
            "full_fetches": r.full_fetches,
            "local_updates": r.local_updates,
            "rejected": r.rejected,
            "buffered": r.buffered,
            "forks": r.forks,
            "nullifiers": r.nullifiers,
            "double_uses": r.double_uses,
            "sync_requests": r.sync_requests,
            "sync_bytes": r.sync_bytes,
            "reconciliations": r.reconciliations,
        })),
        "exec": stats.exec.as_ref().map(|e| json!({
            "grants": e.grants,
            "leases_expired": e.leases_expired,
            "retries": e.retries,
            "accepted": e.accepted,
            "refused": e.refused,
            "executed": e.executed,
            "takeovers": e.takeovers,
            "step_downs": e.step_downs,
            "hedges": e.hedges,
            "completed": e.completed,
            "failed": e.failed,
        })),
    })
}

/// A counter standing at `value`.
fn counter(value: u64) -> Counter<u64> {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    c
}

/// Counters labelled `reason`, one per entry of `counts`.
fn by_reason(
    counts: &std::collections::BTreeMap<&'static str, u64>,
) -> Family<Vec<(String, String)>, Counter<u64>> {
    let family = Family::<Vec<(String, String)>, Counter<u64>>::default();
    for (reason, n) in counts {
        family
            .get_or_create(&vec![("reason".to_owned(), (*reason).to_owned())])
            .inc_by(*n);
    }
    family
}

/// Each enabled protocol's counters.
fn protocol_metrics(registry: &mut Registry, stats: &ProtocolStats) {
    if let Some(p) = &stats.proofs {
        registry.register(
            "proofs_verified",
            "Proofs verified valid",
            counter(p.verified),
        );
        registry.register(
            "proofs_rejected",
            "Proofs refused, by reason",
            by_reason(&p.rejected),
        );
        registry.register(
            "proofs_cache_hits",
            "Proofs that arrived again after being judged",
            counter(p.cache_hits),
        );
        registry.register("proof_batches", "Batches verified", counter(p.batches));
        registry.register(
            "proof_batched_proofs",
            "Proofs verified in batches",
            counter(p.batched_proofs),
        );
        registry.register(
            "proofs_attested",
            "Proofs accepted on attestations",
            counter(p.attested),
        );
    }
    if let Some(r) = &stats.registers {
        registry.register(
            "register_deltas_applied",
            "Register updates applied from deltas",
            counter(r.deltas_applied),
        );
        registry.register(
            "register_full_fetches",
            "Registers brought up to date from a full state",
            counter(r.full_fetches),
        );
        registry.register(
            "register_updates_rejected",
            "Register updates refused",
            counter(r.rejected),
        );
        registry.register(
            "nullifier_rejections",
            "Nullifier uses refused as second uses",
            counter(r.double_uses),
        );
        registry.register(
            "register_sync_bytes",
            "Bytes of register sync requests and responses",
            counter(r.sync_bytes),
        );
    }
    if let Some(e) = &stats.exec {
        registry.register("exec_claims", "Leases granted as leader", counter(e.grants));
        registry.register(
            "exec_leases_expired",
            "Leases that ran out",
            counter(e.leases_expired),
        );
        registry.register("exec_retries", "Retries scheduled", counter(e.retries));
        registry.register("exec_hedges", "Stragglers re-issued", counter(e.hedges));
        registry.register("exec_accepted", "Results accepted", counter(e.accepted));
        registry.register("exec_executed", "Work run here", counter(e.executed));
        registry.register(
            "exec_sequences_completed",
            "Sequences completed as leader",
            counter(e.completed),
        );
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn metrics(node: &Node, stats: &ProtocolStats) -> Result<String> {
    let m = node.network.metrics();
    let mut registry = Registry::with_prefix("causality");
    let gauge = |value: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        g
    };
    registry.register(
        "messages_published",
        "Envelopes this node published",
        counter(m.published),
    );
    registry.register(
        "messages_accepted",
        "Inbound messages accepted",
        counter(m.accepted),
    );
    registry.register(
        "messages_rejected",
        "Inbound messages rejected, by reason",
        by_reason(&m.rejected),
    );
    registry.register(
        "rate_limit_drops",
        "Messages dropped by per-peer rate limits",
        counter(m.rejected.get("rate_limited").copied().unwrap_or(0)),
    );
    registry.register(
        "messages_delivered",
        "Messages handed to local subscribers",
        counter(m.delivered),
    );
    registry.register("requests_sent", "Requests sent", counter(m.requests_sent));
    registry.register(
        "requests_served",
        "Requests handed to local handlers",
        counter(m.requests_served),
    );
    registry.register("peer_bans", "Peers banned", counter(m.bans));
    registry.register(
        "network_bytes_in",
        "Bytes of envelopes and requests received",
        counter(m.bytes_in),
    );
    registry.register(
        "network_bytes_out",
        "Bytes of envelopes and requests sent",
        counter(m.bytes_out),
    );
    registry.register(
        "peers_connected",
        "Connected peers",
        gauge(node.network.peers().len() as u64),
    );
    registry.register(
        "discovery_view_size",
        "Peers in the discovery view",
        gauge(node.discovery.view().len() as u64),
    );
    registry.register(
        "log_entries",
        "Entries appended to the node's log",
        gauge(node.log.len()),
    );
    protocol_metrics(&mut registry, stats);
    // libp2p's registry first, without its end marker; ours closes the exposition.
    let mut out = String::new();
    {
        let libp2p = node
            .libp2p_metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        encode(&mut out, &libp2p)?;
    }
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    encode(&mut out, &registry)?;
    Ok(out)
}

/// A client of a running node's admin endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    token: Option<Token>,
}

impl Client {
    /// A client of `url`, sending `token` when given.
    pub(crate) fn new(url: impl Into<String>, token: Option<Token>) -> Self {
        Self {
            url: url.into().trim().trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The node running in `data_dir`: its address and token from the files it wrote.
    pub(crate) fn for_data_dir(data_dir: &Path) -> Result<Self> {
        let url = std::fs::read_to_string(data_dir.join("admin.addr")).with_context(|| {
            format!(
                "no running node found in {} (no admin.addr); pass --admin",
                data_dir.display()
            )
        })?;
        Ok(Self::new(
            url,
            Some(Token::read(&data_dir.join(COOKIE_FILE))?),
        ))
    }

    /// GET `path`; the body of a 200 answer.
    pub(crate) async fn get(&self, path: &str) -> Result<String> {
        self.call("GET", path).await
    }

    /// Sends `method path`; the body of a 200 answer, or an error with the status and body.
    pub(crate) async fn call(&self, method: &str, path: &str) -> Result<String> {
        self.send(method, path, Bytes::new()).await
    }

    /// POST `body` to `path`; the body of a 200 answer.
    pub(crate) async fn post(&self, path: &str, body: impl Into<Bytes>) -> Result<String> {
        self.send("POST", path, body.into()).await
    }

    async fn send(&self, method: &str, path: &str, body: Bytes) -> Result<String> {
        let limit = Limits::default().request_timeout + Duration::from_secs(5);
        tokio::time::timeout(limit, self.exchange(method, path, body))
            .await
            .map_err(|_| anyhow::anyhow!("{}{path}: no answer within {limit:?}", self.url))?
    }

    async fn exchange(&self, method: &str, path: &str, body: Bytes) -> Result<String> {
        let address = self.url.trim_start_matches("http://");
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot reach the admin endpoint at {address}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, address);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.as_str()));
        }
        let response = sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != StatusCode::OK {
            anyhow::bail!("{}{path}: {status} {}", self.url, body.trim());
        }
        Ok(body)
    }
}

/// Where a node in `data_dir` keeps its admin token.
pub(crate) fn cookie_path(data_dir: &Path) -> PathBuf {
    data_dir.join(COOKIE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_accepts_loopback_hosts_and_the_token_only() {
        let guard = Guard::new(Token("secret".into()), 9100);
        assert!(guard.host_allowed("127.0.0.1:9100"));
        assert!(guard.host_allowed("LOCALHOST:9100"));
        assert!(guard.host_allowed("[::1]:9100"));
        assert!(!guard.host_allowed("127.0.0.1:9101"));
        assert!(!guard.host_allowed("evil.example:9100"));
        assert!(!guard.host_allowed("127.0.0.1"));
        assert!(guard.origin_allowed("http://localhost:9100"));
        assert!(!guard.origin_allowed("https://evil.example"));
        assert!(!guard.origin_allowed("null"));

        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.append(k.clone(), HeaderValue::from_str(v).unwrap());
            }
            map
        };
        assert!(guard.authorized(&headers(&[(header::AUTHORIZATION, "Bearer secret")])));
        assert!(guard.authorized(&headers(&[(header::COOKIE, "a=b; causality_admin=secret")])));
        assert!(!guard.authorized(&headers(&[(header::AUTHORIZATION, "Bearer secre")])));
        assert!(!guard.authorized(&headers(&[(header::AUTHORIZATION, "Basic secret")])));
        assert!(!guard.authorized(&headers(&[(header::COOKIE, "causality_admin=nope")])));
        assert!(!guard.authorized(&HeaderMap::new()));
    }

    /// `accept` failing without pause (EMFILE) must not spin: over ten virtual seconds the
    /// loop tries about ten times a second once the backoff has grown, not millions.
    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_backs_off_instead_of_spinning() {
        let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&attempts);
        let accept = move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::future::ready(Err(std::io::Error::from_raw_os_error(24)))
        };
        let app = Router::new();
        let run = tokio::spawn(accept_loop(accept, app, Limits::default()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        run.abort();
        let attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (5..=30).contains(&attempts),
            "{attempts} accept attempts in 10 s"
        );
    }
}
