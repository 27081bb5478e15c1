//! `yard-apiserver` as a process: a store kept in `--state` survives
//! kill -9 and a restart on the same port, as etcd keeps a real server's.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_apiserver_sim::Client;

const STARTUP: Duration = Duration::from_secs(30);
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/switchyard/leases";

/// A scratch directory removed when the test ends, failed or not.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server process, killed (by its PID) when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(listen: &str, state: &Path, kubeconfig: &Path, files: &[&Path]) -> (Server, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_yard-apiserver"))
        .args(["--listen", listen, "--state"])
        .arg(state)
        .arg("--kubeconfig-out")
        .arg(kubeconfig)
        .args(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("yard-apiserver starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    // The first line names the address; a reader thread keeps the wait
    // bounded if the process never prints it.
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let line = receiver
        .recv_timeout(STARTUP)
        .expect("yard-apiserver prints its address");
    let url = line.trim().rsplit(' ').next().unwrap_or("");
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    (server, addr)
}

fn lease(name: &str, holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "switchyard"},
        "spec": {"holderIdentity": holder},
    })
}

fn resource_version(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

#[test]
fn state_file_survives_kill_9_and_a_restart_on_the_same_port() {
    let dir =
        std::env::temp_dir().join(format!("yard-apiserver-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch(dir.clone());
    let state = dir.join("state.json");
    let kubeconfig = dir.join("kubeconfig");
    let manifest = dir.join("objects.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: switchyard}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: skipped}\n",
    )
    .unwrap();

    let (mut first, addr) = spawn("127.0.0.1:0", &state, &kubeconfig, &[&manifest]);
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        written.contains(&format!("server: http://{addr}")),
        "kubeconfig: {written}"
    );
    let client = Client::new(addr);
    assert_eq!(
        client.get("/api/v1/namespaces/switchyard").unwrap().status,
        200
    );
    let created = client
        .send_json("POST", LEASES, "application/json", &lease("held", "node-a"))
        .unwrap();
    assert_eq!(created.status, 201);
    let created = created.json();

    first.0.kill().expect("SIGKILL reaches the server");
    first.0.wait().unwrap();
    assert!(
        client.get("/api").is_err(),
        "the killed server no longer answers"
    );

    // The same command line again: the store comes from the state file,
    // not from the YAML files.
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: not-loaded}\n",
    )
    .unwrap();
    let (_second, again) = spawn(&addr.to_string(), &state, &kubeconfig, &[&manifest]);
    assert_eq!(again, addr);
    let deadline = Instant::now() + STARTUP;
    let kept = loop {
        match client.get(&format!("{LEASES}/held")) {
            Ok(answer) => break answer,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("the restarted server does not answer: {error}"),
        }
    };
    assert_eq!(kept.status, 200);
    let kept = kept.json();
    assert_eq!(kept["spec"]["holderIdentity"], "node-a");
    assert_eq!(kept["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(resource_version(&kept), resource_version(&created));
    assert_eq!(
        client.get("/api/v1/namespaces/not-loaded").unwrap().status,
        404
    );

    let next = client
        .send_json("POST", LEASES, "application/json", &lease("next", "node-b"))
        .unwrap()
        .json();
    assert!(
        resource_version(&next) > resource_version(&created),
        "the counter continues"
    );
    assert_ne!(next["metadata"]["uid"], created["metadata"]["uid"]);
    drop(scratch);
}

#[test]
fn sim_controls_compact_and_report_writes() {
    let dir =
        std::env::temp_dir().join(format!("yard-apiserver-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).unwrap();
    let _scratch = Scratch(dir.clone());
    let (_server, addr) = spawn(
        "127.0.0.1:0",
        &dir.join("state.json"),
        &dir.join("kubeconfig"),
        &[],
    );
    let client = Client::new(addr);
    let loaded = client
        .request(
            "POST",
            "/_sim/objects",
            Some("application/yaml"),
            b"apiVersion: v1\nkind: Namespace\nmetadata: {name: switchyard}\n",
        )
        .unwrap();
    assert_eq!(loaded.json()["applied"], 1);
    let created = client
        .send_json("POST", LEASES, "application/json", &lease("l", "a"))
        .unwrap()
        .json();
    client
        .send_json("PUT", &format!("{LEASES}/l"), "application/json", &created)
        .unwrap();

    let requests = client.get("/_sim/requests").unwrap().json();
    let methods: Vec<&str> = requests
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["POST", "PUT"],
        "the log holds the API's writes, not the /_sim ones"
    );

    let compacted = client
        .request("POST", "/_sim/compact", None, b"")
        .unwrap()
        .json();
    assert_eq!(
        compacted["compactedAt"].as_u64(),
        Some(resource_version(&created))
    );
    let before = resource_version(&created) - 1;
    let mut watch = client
        .watch(&format!("{LEASES}?watch=1&resourceVersion={before}"))
        .unwrap();
    let error = watch.next_event(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(
        client
            .request("DELETE", "/_sim/requests", None, b"")
            .unwrap()
            .status,
        200
    );

    let delayed = client
        .request("POST", "/_sim/delay?ms=300", None, b"")
        .unwrap();
    assert_eq!(delayed.json()["delayMs"], 300);
    let started = std::time::Instant::now();
    assert_eq!(client.get(LEASES).unwrap().status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "a slow server answers late"
    );
    client
        .request("POST", "/_sim/delay?ms=0", None, b"")
        .unwrap();
    assert_eq!(client.get("/_sim/requests").unwrap().json(), json!([]));
}
