//! The admin endpoint on 127.0.0.1: `/health`, `/status` (JSON), `/metrics` (Prometheus
//! text), and two operator actions used by the devnet, `POST /publish` and `POST /request`.
//!
//! A deliberately small HTTP/1.1 server: one request per connection, requests of at most
//! 8 KiB, no bodies (parameters travel in the query string).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use causality_log::LogStore as _;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::node::Node;

const MAX_REQUEST: usize = 8 * 1024;

pub(crate) async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &node).await {
                tracing::debug!(target: "causality_node", error = %e, "admin request failed");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, node: &Node) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return respond(&mut stream, 400, "text/plain", "bad request\n").await;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    match (method, path) {
        ("GET", "/health") => respond(&mut stream, 200, "text/plain", "ok\n").await,
        ("GET", "/status") => {
            let body = serde_json::to_string_pretty(&status(node))?;
            respond(&mut stream, 200, "application/json", &body).await
        }
        ("GET", "/metrics") => {
            respond(
                &mut stream,
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &metrics(node)?,
            )
            .await
        }
        ("POST", "/publish") => {
            let (Some(topic), Some(payload)) = (params.get("topic"), params.get("payload")) else {
                return respond(
                    &mut stream,
                    400,
                    "text/plain",
                    "topic and payload are required\n",
                )
                .await;
            };
            match node.publish(topic, payload).await {
                Ok(id) => respond(&mut stream, 200, "text/plain", &format!("{id}\n")).await,
                Err(e) => respond(&mut stream, 400, "text/plain", &format!("{e:#}\n")).await,
            }
        }
        ("POST", "/request") => {
            let (Some(peer), Some(body)) = (params.get("peer"), params.get("body")) else {
                return respond(
                    &mut stream,
                    400,
                    "text/plain",
                    "peer and body are required\n",
                )
                .await;
            };
            match node.echo(peer, body).await {
                Ok(answer) => respond(&mut stream, 200, "text/plain", &format!("{answer}\n")).await,
                Err(e) => respond(&mut stream, 502, "text/plain", &format!("{e:#}\n")).await,
            }
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(stream: &mut TcpStream, code: u16, content_type: &str, body: &str) -> Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Bad Gateway",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn status(node: &Node) -> serde_json::Value {
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
        "view": node.discovery.members().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "topics": node.received(),
        "log": { "size": head.size, "root": hex(&head.root) },
        "uptime_s": node.started.elapsed().as_secs(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn metrics(node: &Node) -> Result<String> {
    let m = node.network.metrics();
    let mut registry = Registry::with_prefix("causality");
    let counter = |value: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        c
    };
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
    let rejected = Family::<Vec<(String, String)>, Counter<u64>>::default();
    for (reason, n) in &m.rejected {
        rejected
            .get_or_create(&vec![("reason".to_owned(), (*reason).to_owned())])
            .inc_by(*n);
    }
    registry.register(
        "messages_rejected",
        "Inbound messages rejected, by reason",
        rejected,
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

/// GET `path` from a running node's admin endpoint.
pub(crate) async fn get(admin: &str, path: &str) -> Result<String> {
    call(admin, "GET", path).await
}

/// Sends `method path` to a running node's admin endpoint; the body of a 200 answer.
pub(crate) async fn call(admin: &str, method: &str, path: &str) -> Result<String> {
    let address = admin.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the admin endpoint at {address}: {e}"))?;
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!(
            "{address}{path}: {} {}",
            head.lines().next().unwrap_or_default(),
            body.trim()
        );
    }
    Ok(body.to_owned())
}
