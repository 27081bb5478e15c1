//! The speaker against a stand-in for BIRD's control socket: what it
//! writes, when it has BIRD read it, and what it reports.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_config::snapshot::{AnnounceMode, Announcement};

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// Answers every command as BIRD would, `configure` with success or, when
/// `refuse` is set, with a parse error; remembers the IPv4 route file as
/// it was at each `configure`.
struct FakeBird {
    refuse: Arc<Mutex<bool>>,
    configured: Arc<Mutex<Vec<String>>>,
}

impl FakeBird {
    fn start(socket: &Path, routes: PathBuf) -> FakeBird {
        let listener = UnixListener::bind(socket).unwrap();
        let refuse = Arc::new(Mutex::new(false));
        let configured = Arc::new(Mutex::new(Vec::new()));
        let (refusing, seen) = (refuse.clone(), configured.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.write_all(b"0001 BIRD 2.0.12 ready.\n");
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() {
                    continue;
                }
                let reply = if line.trim() == "show protocols all" {
                    "2002-Name Proto Table State Since Info\n\
                     1002-router4 BGP --- up 02:19:31.001 Established\n\
                     1006-  BGP state:          Established\n     Neighbor address: 198.18.2.1\n\
                     1002-router6 BGP --- start 02:19:29.226 Active\n\
                     1006-  BGP state:          Active\n     Neighbor address: 2001:db8:2::1\n\
                     0000 \n"
                        .to_owned()
                } else if line.trim() != "configure" {
                    "9001 syntax error\n".to_owned()
                } else if *refusing.lock().unwrap() {
                    "0002-Reading configuration from bird.conf\n\
                     8002 vips4.conf:1:1 syntax error\n"
                        .to_owned()
                } else {
                    let file = std::fs::read_to_string(routes.join(routes::IPV4_FILE));
                    seen.lock().unwrap().push(file.unwrap_or_default());
                    "0002-Reading configuration from bird.conf\n0003 Reconfigured\n".to_owned()
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        FakeBird { refuse, configured }
    }

    fn configured(&self) -> Vec<String> {
        self.configured.lock().unwrap().clone()
    }
}

struct Lab {
    dir: PathBuf,
    speaker: BgpSpeaker,
    bird: Option<FakeBird>,
}

impl Lab {
    fn new(name: &str, with_bird: bool) -> Lab {
        let dir = std::env::temp_dir().join(format!("swy-bgp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = BgpOptions {
            node_name: "lb-test".to_owned(),
            bird_socket: dir.join("bird.ctl"),
            route_dir: dir.join("routes"),
        };
        let bird = with_bird.then(|| FakeBird::start(&options.bird_socket, dir.join("routes")));
        let speaker = spawn(&options, "syvtest".to_owned(), None).unwrap();
        Lab { dir, speaker, bird }
    }

    fn routes(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("routes").join(routes::IPV4_FILE))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    fn states(&self, vips: &[IpAddr]) -> Vec<(String, String)> {
        let wanted: Vec<Announcement> = vips
            .iter()
            .map(|&address| Announcement {
                address,
                mode: AnnounceMode::Bgp,
                gateway: "lb/edge".to_owned(),
            })
            .collect();
        self.speaker
            .status(&wanted)
            .into_iter()
            .map(|s| (s.state, s.detail))
            .collect()
    }

    /// Waits until every one of `vips` is in `state`.
    fn wait_for(&self, vips: &[IpAddr], state: &str) -> Vec<(String, String)> {
        let start = Instant::now();
        loop {
            let states = self.states(vips);
            if states.iter().all(|(s, _)| s == state) {
                return states;
            }
            assert!(start.elapsed() < DEADLINE, "still {states:?}, not {state}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn served_vips_are_written_and_bird_reads_them() {
    let mut lab = Lab::new("served", true);
    let vips = [ip("198.18.0.10"), ip("198.18.0.11")];
    lab.speaker.set(&vips, false).unwrap();
    let states = lab.wait_for(&vips, ANNOUNCE_ANNOUNCED);
    assert!(states[0].1.contains("syvtest"), "{states:?}");
    assert_eq!(
        lab.routes(),
        [
            "route 198.18.0.10/32 via \"syvtest\";",
            "route 198.18.0.11/32 via \"syvtest\";"
        ]
    );
    let configured = lab.bird.as_ref().unwrap().configured();
    assert!(configured.last().unwrap().contains("198.18.0.11/32"));
}

#[test]
fn a_vip_no_longer_served_is_withdrawn() {
    let mut lab = Lab::new("unserved", true);
    let (a, b) = (ip("198.18.0.10"), ip("198.18.0.11"));
    lab.speaker.set(&[a, b], false).unwrap();
    lab.wait_for(&[a, b], ANNOUNCE_ANNOUNCED);
    lab.speaker.set(&[a], false).unwrap();
    lab.wait_for(&[b], ANNOUNCE_WITHDRAWN);
    assert_eq!(lab.routes(), ["route 198.18.0.10/32 via \"syvtest\";"]);
    let configured = lab.bird.as_ref().unwrap().configured();
    assert!(!configured.last().unwrap().contains("198.18.0.11"));
}

#[test]
fn a_drained_node_announces_nothing_and_says_why() {
    let mut lab = Lab::new("drained", true);
    let a = ip("198.18.0.10");
    lab.speaker.set(&[a], false).unwrap();
    lab.wait_for(&[a], ANNOUNCE_ANNOUNCED);
    lab.speaker.set(&[a], true).unwrap();
    let states = lab.wait_for(&[a], ANNOUNCE_WITHDRAWN);
    assert_eq!(states[0].1, "node drained");
    let start = Instant::now();
    while !lab.routes().is_empty() || lab.bird.as_ref().unwrap().configured().len() < 2 {
        assert!(
            start.elapsed() < DEADLINE,
            "routes left: {:?}",
            lab.routes()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn bird_refusing_the_routes_is_reported_and_tried_again() {
    let mut lab = Lab::new("refused", true);
    *lab.bird.as_ref().unwrap().refuse.lock().unwrap() = true;
    let a = ip("198.18.0.10");
    lab.speaker.set(&[a], false).unwrap();
    let start = Instant::now();
    loop {
        let states = lab.states(&[a]);
        if states[0].1.contains("8002") {
            assert_eq!(states[0].0, ANNOUNCE_WITHDRAWN);
            assert!(states[0].1.contains("vips4.conf:1:1"), "{states:?}");
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{states:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    *lab.bird.as_ref().unwrap().refuse.lock().unwrap() = false;
    let states = lab.wait_for(&[a], ANNOUNCE_ANNOUNCED);
    assert!(!states[0].1.contains("failed"), "{states:?}");
}

#[test]
fn without_bird_the_socket_is_named_and_withdrawing_does_not_hang() {
    let mut lab = Lab::new("no-bird", false);
    let a = ip("198.18.0.10");
    lab.speaker.set(&[a], false).unwrap();
    let start = Instant::now();
    loop {
        let states = lab.states(&[a]);
        if states[0].1.contains("bird.ctl") {
            assert_eq!(states[0].0, ANNOUNCE_WITHDRAWN);
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{states:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    lab.speaker.withdraw_all();
    assert!(start.elapsed() < WITHDRAW_WAIT + Duration::from_secs(2));
}

#[test]
fn shutdown_withdraws_through_bird_before_returning() {
    let mut lab = Lab::new("shutdown", true);
    let a = ip("198.18.0.10");
    lab.speaker.set(&[a], false).unwrap();
    lab.wait_for(&[a], ANNOUNCE_ANNOUNCED);
    lab.speaker.withdraw_all();
    assert!(lab.routes().is_empty());
    let configured = lab.bird.as_ref().unwrap().configured();
    assert!(!configured.last().unwrap().contains("198.18.0.10"));
    assert!(lab.speaker.set(&[a], false).is_err());
    let states = lab.states(&[a]);
    assert_eq!(states[0].0, ANNOUNCE_WITHDRAWN);
}

#[test]
fn a_hand_over_leaves_the_routes_to_the_next_process() {
    let mut lab = Lab::new("hand-over", true);
    let a = ip("198.18.0.10");
    lab.speaker.set(&[a], false).unwrap();
    lab.wait_for(&[a], ANNOUNCE_ANNOUNCED);
    let before = lab.bird.as_ref().unwrap().configured().len();
    lab.speaker.hand_over();
    assert!(lab.speaker.set(&[], false).is_err());
    lab.speaker.withdraw_all();
    assert_eq!(lab.routes(), ["route 198.18.0.10/32 via \"syvtest\";"]);
    assert_eq!(lab.bird.as_ref().unwrap().configured().len(), before);
}

#[test]
fn birds_bgp_sessions_are_the_peers() {
    let mut lab = Lab::new("sessions", true);
    let a = ip("198.18.0.10");
    lab.speaker.set(&[a], false).unwrap();
    lab.wait_for(&[a], ANNOUNCE_ANNOUNCED);
    let start = Instant::now();
    let peers = loop {
        let peers = lab.speaker.peers();
        if !peers.is_empty() {
            break peers;
        }
        assert!(start.elapsed() < DEADLINE, "no peers");
        std::thread::sleep(Duration::from_millis(5));
    };
    let summary: Vec<(&str, &str, &str)> = peers
        .iter()
        .map(|p| (p.name.as_str(), p.address.as_str(), p.state.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("router4", "198.18.2.1", "alive"),
            ("router6", "2001:db8:2::1", "dead")
        ]
    );
}
