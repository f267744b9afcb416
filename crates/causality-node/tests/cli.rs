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
}

fn start(data: &Path) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut admin, mut peer) = (String::new(), String::new());
    while admin.is_empty() || peer.is_empty() {
        let line = lines.next().expect("node exited").unwrap();
        if let Some(v) = line.strip_prefix("ADMIN ") {
            admin = v.to_owned();
        } else if let Some(v) = line.strip_prefix("PEER ") {
            peer = v.to_owned();
        }
    }
    Running { child, admin, peer }
}

fn http_get(admin: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(admin.trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn a_running_node_serves_admin_refuses_a_second_process_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let mut running = start(&data);

    assert_eq!(http_get(&running.admin, "/health").trim(), "ok");
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&running.admin, "/status")).unwrap();
    assert_eq!(status["peer_id"], running.peer.as_str());

    let metrics = http_get(&running.admin, "/metrics");
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
    Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
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
