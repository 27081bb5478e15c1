use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use switchyard_config::snapshot::{AnnounceMode, Announcement, Snapshot};
use switchyard_proto::{AnnouncementStatus, ANNOUNCE_ANNOUNCED, ANNOUNCE_WITHDRAWN};

use super::*;

/// What a fake speaker was told, in order.
type Calls = Arc<Mutex<Vec<String>>>;

struct Fake {
    calls: Calls,
    vips: Vec<IpAddr>,
    drained: bool,
}

impl Speaker for Fake {
    fn set(&mut self, vips: &[IpAddr], drained: bool) -> Result<(), AnnounceError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("set {vips:?} drained={drained}"));
        self.vips = if drained { Vec::new() } else { vips.to_vec() };
        self.drained = drained;
        Ok(())
    }

    fn withdraw_all(&mut self) {
        self.calls.lock().unwrap().push("withdraw_all".into());
        self.vips.clear();
    }

    fn hand_over(&mut self) {
        self.calls.lock().unwrap().push("hand_over".into());
    }

    fn status(&self, wanted: &[Announcement]) -> Vec<AnnouncementStatus> {
        wanted
            .iter()
            .map(|a| AnnouncementStatus {
                address: a.address.to_string(),
                mode: a.mode.to_string(),
                gateway: a.gateway.clone(),
                state: if self.vips.contains(&a.address) {
                    ANNOUNCE_ANNOUNCED
                } else {
                    ANNOUNCE_WITHDRAWN
                }
                .to_owned(),
                detail: String::new(),
            })
            .collect()
    }
}

fn announcing(entries: &[(&str, AnnounceMode)]) -> Snapshot {
    Snapshot::default().with_announcements(
        entries
            .iter()
            .map(|(address, mode)| Announcement {
                address: address.parse().unwrap(),
                mode: *mode,
                gateway: "lb/edge".into(),
            })
            .collect(),
    )
}

/// An announcer whose L2 factory makes fakes and counts its starts.
fn announcer(calls: &Calls, starts: &Arc<Mutex<u32>>) -> Announcer {
    let (calls, starts) = (calls.clone(), starts.clone());
    let factory: SpeakerFactory = Box::new(move || {
        *starts.lock().unwrap() += 1;
        Ok(Box::new(Fake {
            calls: calls.clone(),
            vips: Vec::new(),
            drained: false,
        }) as Box<dyn Speaker>)
    });
    let announcer = Announcer::new("lb-a", vec![(AnnounceMode::L2, factory)]);
    announcer.start(&Snapshot::default());
    announcer
}

#[test]
fn a_speaker_starts_only_when_the_config_asks_for_its_mode() {
    let (calls, starts) = (Calls::default(), Arc::new(Mutex::new(0)));
    let announcer = announcer(&calls, &starts);
    announcer.update(&Snapshot::default());
    assert_eq!(*starts.lock().unwrap(), 0);
    announcer.update(&announcing(&[("198.18.0.10", AnnounceMode::L2)]));
    announcer.update(&announcing(&[("198.18.0.10", AnnounceMode::L2)]));
    assert_eq!(*starts.lock().unwrap(), 1);
    assert_eq!(
        calls.lock().unwrap().as_slice(),
        [
            "set [198.18.0.10] drained=false",
            "set [198.18.0.10] drained=false"
        ]
    );
}

#[test]
fn a_drained_node_withdraws_and_undrain_announces_again() {
    let (calls, starts) = (Calls::default(), Arc::new(Mutex::new(0)));
    let announcer = announcer(&calls, &starts);
    announcer.update(&announcing(&[("198.18.0.10", AnnounceMode::L2)]));
    let report = announcer.set_drained(true);
    assert!(report.drained);
    assert_eq!(report.announcements[0].state, ANNOUNCE_WITHDRAWN);
    // A reload while drained announces nothing either.
    announcer.update(&announcing(&[("198.18.0.11", AnnounceMode::L2)]));
    let report = announcer.set_drained(false);
    assert_eq!(report.announcements[0].address, "198.18.0.11");
    assert_eq!(report.announcements[0].state, ANNOUNCE_ANNOUNCED);
    assert_eq!(
        calls.lock().unwrap()[1..],
        [
            "set [198.18.0.10] drained=true",
            "set [198.18.0.11] drained=true",
            "set [198.18.0.11] drained=false",
        ]
    );
}

#[test]
fn a_mode_without_a_speaker_is_reported_on_each_of_its_vips() {
    let (calls, starts) = (Calls::default(), Arc::new(Mutex::new(0)));
    let announcer = announcer(&calls, &starts);
    announcer.update(&announcing(&[
        ("198.18.0.10", AnnounceMode::L2),
        ("198.18.0.20", AnnounceMode::Bgp),
    ]));
    let report = announcer.status();
    let bgp = report
        .announcements
        .iter()
        .find(|a| a.mode == "BGP")
        .expect("the BGP VIP is reported");
    assert_eq!(bgp.state, ANNOUNCE_WITHDRAWN);
    assert!(bgp.detail.contains("no BGP speaker"), "{}", bgp.detail);
}

#[test]
fn shutdown_withdraws_and_nothing_is_announced_after_it() {
    let (calls, starts) = (Calls::default(), Arc::new(Mutex::new(0)));
    let announcer = announcer(&calls, &starts);
    announcer.update(&announcing(&[("198.18.0.10", AnnounceMode::L2)]));
    announcer.shutdown();
    announcer.update(&announcing(&[("198.18.0.10", AnnounceMode::L2)]));
    assert_eq!(
        calls.lock().unwrap().last().map(String::as_str),
        Some("withdraw_all")
    );
}

#[test]
fn a_hand_over_withdraws_nothing() {
    let (calls, starts) = (Calls::default(), Arc::new(Mutex::new(0)));
    let announcer = announcer(&calls, &starts);
    announcer.update(&announcing(&[("198.18.0.10", AnnounceMode::L2)]));
    announcer.hand_over();
    assert!(!calls.lock().unwrap().iter().any(|c| c == "withdraw_all"));
}

#[test]
fn nothing_is_announced_before_the_workers_serve() {
    let (calls, starts) = (Calls::default(), Arc::new(Mutex::new(0)));
    let (c, s) = (calls.clone(), starts.clone());
    let factory: SpeakerFactory = Box::new(move || {
        *s.lock().unwrap() += 1;
        Ok(Box::new(Fake {
            calls: c.clone(),
            vips: Vec::new(),
            drained: false,
        }) as Box<dyn Speaker>)
    });
    let announcer = Announcer::new("lb-a", vec![(AnnounceMode::L2, factory)]);
    let wanted = announcing(&[("198.18.0.10", AnnounceMode::L2)]);
    announcer.update(&wanted);
    assert_eq!(*starts.lock().unwrap(), 0);
    announcer.start(&wanted);
    assert_eq!(
        calls.lock().unwrap().as_slice(),
        ["set [198.18.0.10] drained=false"]
    );
}
