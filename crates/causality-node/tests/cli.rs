//! The `causality-node` binary as operators use it: real processes on 127.0.0.1.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_causality-node");

fn node(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A config error: non-zero exit, exactly one line on stderr naming the problem, and
/// nothing written to the data directory.
fn assert_config_error(args: &[&str], data_dir: &Path, expected: &str) {
    let out = node(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.starts_with("error: ") && stderr.contains(expected),
        "{args:?}: {stderr}"
    );
    assert!(!data_dir.exists(), "{args:?} wrote {}", data_dir.display());
}

#[test]
fn configuration_errors_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let config = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };

    let bad_toml = config("bad.toml", "listen = [\n");
    assert_config_error(
        &["run", "-c", &bad_toml, "--data-dir", data_s],
        &data,
        "bad.toml",
    );
    let unknown = config("unknown.toml", "listen_on = []\n");
    assert_config_error(
        &["run", "-c", &unknown, "--data-dir", data_s],
        &data,
        "unknown field `listen_on`",
    );
    assert_config_error(
        &["run", "--data-dir", data_s, "--bootstrap", "tcp://nope"],
        &data,
        "bootstrap: `tcp://nope` is not a multiaddr",
    );

    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("data");
    let out = node(&[
        "run",
        "--data-dir",
        under_file.to_str().unwrap(),
        "--admin-port",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot create it"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    assert_config_error(
        &["run", "--data-dir", data_s, "--admin-port", &port],
        &data,
        "is not available",
    );
}

struct Running {
    child: Child,
    admin: String,
    peer: String,
    /// The TCP listen address.
    tcp: String,
    token: String,
}

fn start(data: &Path) -> Running {
    start_with(data, &[])
}

fn start_with(data: &Path, extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut admin, mut peer, mut tcp) = (String::new(), String::new(), String::new());
    while admin.is_empty() || peer.is_empty() || tcp.is_empty() {
        let line = lines.next().expect("node exited").unwrap();
        if let Some(v) = line.strip_prefix("ADMIN ") {
            admin = v.to_owned();
        } else if let Some(v) = line.strip_prefix("PEER ") {
            peer = v.to_owned();
        } else if let Some(v) = line.strip_prefix("LISTEN ") {
            tcp = v.to_owned();
        }
    }
    let token = std::fs::read_to_string(data.join("admin.cookie"))
        .unwrap()
        .trim()
        .to_owned();
    Running {
        child,
        admin,
        peer,
        tcp,
        token,
    }
}

/// One HTTP/1.1 exchange with raw headers: (status code, body).
fn http(admin: &str, request_head: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(admin.trim_start_matches("http://")).unwrap();
    write!(stream, "{request_head}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// GET with the right Host and the token; the body of a 200 answer.
fn http_get(running: &Running, path: &str) -> String {
    let host = running.admin.trim_start_matches("http://");
    let (code, body) = http(
        &running.admin,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
            running.token
        ),
    );
    assert_eq!(code, 200, "{path}: {body}");
    body
}

#[test]
fn a_running_node_serves_admin_refuses_a_second_process_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let mut running = start(&data);

    assert_eq!(http_get(&running, "/health").trim(), "ok");
    let status: serde_json::Value = serde_json::from_str(&http_get(&running, "/status")).unwrap();
    assert_eq!(status["peer_id"], running.peer.as_str());

    let metrics = http_get(&running, "/metrics");
    let scrape =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for expected in [
        "causality_messages_accepted_total",
        "causality_peers_connected",
        "causality_log_entries",
        "libp2p_swarm_new_listen_addr_total",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    // `status` finds the node through its data directory.
    let out = node(&["status", "--data-dir", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&running.peer));

    // A second process on the same data directory is refused.
    let out = node(&["run", "--data-dir", data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("in use by another causality-node process"),
        "{stderr}"
    );

    // SIGTERM: graceful exit, and the log verifies afterwards.
    stop(&mut running);
    let out = node(&["log", "verify", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("log ok:"));
}

/// Three node processes discover each other and exchange messages; one is SIGKILLed and
/// restarted from its data directory, rejoins with the same identity, and every log
/// verifies. (This is the devnet at its smallest size.)
#[test]
fn three_processes_discover_exchange_survive_kill_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let out = node(&[
        "devnet",
        "--nodes",
        "3",
        "--seed",
        "2",
        "--dir",
        tmp.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in [
        "discovery converges",
        "publish reaches every subscriber",
        "request-response",
        "kill -9 and restart one node",
        "every log verifies",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(phase) && l.contains(" ok ")),
            "{phase}: {stdout}"
        );
    }
}

/// Stops a node with SIGTERM and waits for a clean exit.
fn stop(running: &mut Running) {
    Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The admin endpoint as an attacker on the same host meets it: a web page (CSRF, DNS
/// rebinding), a local process without the token, a client that never finishes its
/// request.
#[test]
fn the_admin_endpoint_wants_the_token_a_loopback_host_and_a_prompt_client() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let mut running = start(&data);
    let host = running.admin.trim_start_matches("http://").to_owned();
    let token = running.token.clone();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("admin.cookie"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the token file is readable by others: {mode:o}"
        );
    }
    let get = |path: &str, headers: &str| {
        http(
            &running.admin,
            &format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n"),
        )
    };
    // Health and metrics are open to anyone on the host; status is not.
    assert_eq!(get("/health", &format!("Host: {host}\r\n")).0, 200);
    assert_eq!(get("/metrics", &format!("Host: {host}\r\n")).0, 200);
    let (code, body) = get("/status", &format!("Host: {host}\r\n"));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("admin token"), "{body}");
    let wrong = format!(
        "Host: {host}\r\nAuthorization: Bearer {}\r\n",
        "0".repeat(64)
    );
    assert_eq!(get("/status", &wrong).0, 401);
    let right = format!("Host: {host}\r\nAuthorization: Bearer {token}\r\n");
    assert_eq!(get("/status", &right).0, 200);
    let cookie = format!("Host: {host}\r\nCookie: theme=dark; causality_admin={token}\r\n");
    assert_eq!(get("/status", &cookie).0, 200);

    // DNS rebinding: a page on another name that resolves to 127.0.0.1.
    let port = host.rsplit(':').next().unwrap();
    let rebound = format!("Host: evil.example:{port}\r\nAuthorization: Bearer {token}\r\n");
    assert_eq!(get("/status", &rebound).0, 421);
    assert_eq!(
        get("/health", "").0,
        400,
        "a request without Host is refused"
    );
    // CSRF: a cross-site form post, even one that carries the cookie.
    let (code, _) = http(
        &running.admin,
        &format!(
            "POST /publish?topic=execution/result/x&payload=p HTTP/1.1\r\nHost: {host}\r\n\
             Origin: http://evil.example\r\nCookie: causality_admin={token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n"
        ),
    );
    assert_eq!(code, 403);

    // A client that sends half a request head is cut off by the header timeout, and the
    // endpoint keeps serving others meanwhile.
    let mut slow = std::net::TcpStream::connect(&host).unwrap();
    write!(slow, "GET /status HTTP/1.1\r\nHost: {host}\r\n").unwrap();
    let started = Instant::now();
    assert_eq!(get("/status", &right).0, 200);
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(25),
        "a stalled request head held its connection for {waited:?}"
    );

    // `status` reads the token from the data directory; without it, it says why.
    let out = node(&["status", "--data-dir", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stranger = tmp.path().join("no-token");
    let out = node(&[
        "status",
        "--admin",
        &running.admin,
        "--token-file",
        stranger.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the admin token"));
    stop(&mut running);
    assert!(
        !data.join("admin.cookie").exists(),
        "the token is removed at a clean stop"
    );
}

/// Identities are free: a peer that connects and disconnects with a fresh key in a loop
/// makes the node log each connection. The node's event log grows by at most its budget
/// (burst plus rate over the flood), whatever the flood's size.
#[test]
fn a_connection_flood_grows_the_event_log_by_its_budget_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let config = tmp.path().join("node.toml");
    let (rate, burst) = (256u64, 4096u64);
    std::fs::write(
        &config,
        format!("event_log_bytes_per_second = {rate}\nevent_log_burst_bytes = {burst}\n"),
    )
    .unwrap();
    let mut running = start_with(&data, &["-c", config.to_str().unwrap()]);
    let status: serde_json::Value = serde_json::from_str(&http_get(&running, "/status")).unwrap();
    let size_before = status["log"]["size"].as_u64().unwrap();

    let target: libp2p::Multiaddr = running.tcp.parse().unwrap();
    let churns = 150;
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use futures::StreamExt as _;
        for _ in 0..churns {
            let mut swarm = raw_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
                libp2p::swarm::dummy::Behaviour
            });
            swarm.dial(target.clone()).unwrap();
            let connected = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } =
                        swarm.select_next_some().await
                    {
                        return;
                    }
                }
            })
            .await;
            assert!(connected.is_ok(), "the flood could not connect");
            // Long enough for the node to try its handshake on the connection.
            let _ = tokio::time::timeout(Duration::from_millis(20), swarm.select_next_some()).await;
        }
    });
    // Let the node notice the last disconnections, then stop it and read its log.
    std::thread::sleep(Duration::from_secs(1));
    let elapsed = started.elapsed();
    stop(&mut running);

    let log =
        causality_log::RocksLog::open(data.join("db"), causality_log::RocksLogOptions::default())
            .unwrap();
    use causality_log::LogStore as _;
    let mut grown = 0u64;
    let mut connections = 0u64;
    for index in size_before..log.len() {
        let entry = log.get(index).unwrap();
        let text = String::from_utf8_lossy(&entry.payload);
        if text.contains("peer") || text.contains("handshake") {
            connections += 1;
        }
        grown += causality_log::Budget::entry_cost(&entry.payload, &entry.source, &entry.metadata);
    }
    let bound = burst + (elapsed.as_secs_f64() * rate as f64).ceil() as u64 + 1024;
    println!(
        "{churns} connections in {elapsed:?}: the log grew by {} entries, {grown} bytes ({connections} about peers); bound {bound}",
        log.len() - size_before
    );
    assert!(
        grown <= bound,
        "{churns} connections grew the log by {grown} bytes in {elapsed:?}; bound {bound}"
    );
    assert!(connections > 0, "the flood was not logged at all");
}

/// A node killed with SIGKILL restarts above every sequence number it could have used:
/// it starts from the reservation it recorded (16,777,216 numbers ahead, about 17 s of
/// clock), not from its clock, so a clock that stepped back while it was down cannot make
/// its peers take it for a replayer.
#[test]
fn a_killed_node_restarts_above_its_sequence_reservation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let mut running = start(&data);
    let host = running.admin.trim_start_matches("http://").to_owned();
    for i in 0..3 {
        let (code, body) = http(
            &running.admin,
            &format!(
                "POST /publish?topic=execution/result/seq&payload=p{i} HTTP/1.1\r\nHost: {host}\r\n\
                 Authorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n",
                running.token
            ),
        );
        assert_eq!(code, 200, "{body}");
    }
    let status: serde_json::Value = serde_json::from_str(&http_get(&running, "/status")).unwrap();
    let used = status["next_seq"].as_u64().unwrap();
    running.child.kill().unwrap();
    running.child.wait().unwrap();

    let mut restarted = start(&data);
    let status: serde_json::Value = serde_json::from_str(&http_get(&restarted, "/status")).unwrap();
    let next = status["next_seq"].as_u64().unwrap();
    // The clock alone would put it a few seconds (a few million µs) above; the
    // reservation puts it about a block above.
    assert!(
        next > used + (1 << 23),
        "restarted at {next}, not above the reservation made before {used}"
    );
    stop(&mut restarted);
}

/// A bare libp2p swarm (TCP, noise, yamux) of `identity` running `behaviour`: a peer that
/// speaks the transport but none of the node's protocols.
fn raw_swarm<B: libp2p::swarm::NetworkBehaviour>(
    identity: libp2p::identity::Keypair,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// A peer that sends junk on a topic the node follows is banned; the ban is saved and a
/// restarted node (same data directory) still refuses the peer.
#[test]
fn a_ban_survives_a_restart_of_the_node() {
    use futures::StreamExt as _;
    use libp2p::gossipsub;

    const TOPIC: &str = "execution/result/bans";
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let mut running = start_with(&data, &["--subscribe", TOPIC]);
    let target: libp2p::Multiaddr = running.tcp.parse().unwrap();
    let topic: causality_net::Topic = TOPIC.parse().unwrap();
    let physical = gossipsub::IdentTopic::new(
        topic
            .physical(
                causality_net::default_hello().version.major,
                causality_net::Limits::default().topic_shards,
            )
            .as_str(),
    );
    let identity = libp2p::identity::Keypair::generate_ed25519();
    let junk_sender = identity.public().to_peer_id().to_string();
    let swarm = |identity: libp2p::identity::Keypair| {
        raw_swarm(identity, |key| {
            gossipsub::Behaviour::<
                gossipsub::IdentityTransform,
                gossipsub::AllowAllSubscriptionFilter,
            >::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::Config::default(),
            )
            .unwrap()
        })
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut attacker = swarm(identity.clone());
        attacker.behaviour_mut().subscribe(&physical).unwrap();
        attacker.dial(target.clone()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut sent = 0u32;
        loop {
            tokio::select! {
                event = attacker.select_next_some() => {
                    if let libp2p::swarm::SwarmEvent::ConnectionClosed { num_established: 0, .. } = event
                        && sent > 0
                    {
                        return;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    let junk = format!("not an envelope {sent}").into_bytes();
                    if attacker.behaviour_mut().publish(physical.clone(), junk).is_ok() {
                        sent += 1;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "the junk sender was not cut off ({sent} sent)");
                }
            }
        }
    });
    let banned = |running: &Running| {
        let status: serde_json::Value =
            serde_json::from_str(&http_get(running, "/status")).unwrap();
        status["bans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["peer"] == junk_sender.as_str())
    };
    assert!(banned(&running), "the junk sender is banned");
    stop(&mut running);

    let restarted = start_with(&data, &["--subscribe", TOPIC]);
    assert!(banned(&restarted), "the ban was restored");
    // The banned peer cannot stay connected to the restarted node.
    let target: libp2p::Multiaddr = restarted.tcp.parse().unwrap();
    runtime.block_on(async {
        let mut attacker = swarm(identity);
        attacker.dial(target).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match attacker.select_next_some().await {
                    libp2p::swarm::SwarmEvent::ConnectionClosed {
                        num_established: 0, ..
                    }
                    | libp2p::swarm::SwarmEvent::OutgoingConnectionError { .. } => return,
                    _ => {}
                }
            }
        })
        .await;
        assert!(outcome.is_ok(), "the banned peer stayed connected");
    });
    let mut restarted = restarted;
    stop(&mut restarted);
}
