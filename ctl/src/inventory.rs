//! Human rendering of `yardctl listeners`, `backends` and `drain`.

use std::fmt::Write as _;

use crate::tables::{right_align, table};
use switchyard_proto::{BackendsReport, DrainReport, ListenersReport};

// Column names are the JSON field names in capitals; AFFINITY TIMEOUT is
// the ClientIP session affinity's.
const LISTENER_COLUMNS: [&str; 10] = [
    "LISTENER",
    "PROTOCOL",
    "VIP",
    "MODE",
    "LISTENER PORT",
    "ROUTE",
    "BACKENDS",
    "TABLE SIZE",
    "AFFINITY TIMEOUT",
    "ACTIVE FLOWS",
];
const BACKEND_COLUMNS: [&str; 9] = [
    "LISTENER",
    "VIP",
    "BACKEND",
    "SERVICE",
    "STATE",
    "GROUP WEIGHT",
    "EFFECTIVE WEIGHT",
    "SLOTS",
    "ACTIVE FLOWS",
];

pub fn render_listeners(r: &ListenersReport) -> String {
    let mut rows = table(&LISTENER_COLUMNS);
    for l in &r.listeners {
        rows.add_row(vec![
            l.listener.clone(),
            l.protocol.clone(),
            l.vip.clone(),
            if l.mode.is_empty() {
                "-".to_owned()
            } else {
                l.mode.clone()
            },
            l.listener_port.to_string(),
            if l.route.is_empty() {
                "-".to_owned()
            } else {
                l.route.clone()
            },
            l.backends.to_string(),
            l.table_size.to_string(),
            l.affinity_timeout_secs
                .map_or_else(|| "-".to_owned(), |t| format!("{t}s")),
            l.active_flows.to_string(),
        ]);
    }
    right_align(&mut rows, 6);
    let mut out = String::new();
    let _ = writeln!(out, "{rows}");
    let _ = writeln!(
        out,
        "{} listeners, config generation {}",
        r.listeners.len(),
        r.generation
    );
    out
}

/// Shown when some backend is health-checked.
const HEALTH_COLUMNS: [&str; 4] = ["HEALTH", "LAST PROBE", "PROBE LATENCY", "HEALTH CHANGED"];

pub fn render_backends(r: &BackendsReport) -> String {
    let checked = r.backends.iter().any(|b| b.health.is_some());
    let columns: Vec<&str> = BACKEND_COLUMNS
        .iter()
        .chain(checked.then_some(&HEALTH_COLUMNS).into_iter().flatten())
        .copied()
        .collect();
    let mut rows = table(&columns);
    let or_dash = |text: Option<String>| text.unwrap_or_else(|| "-".to_owned());
    for b in &r.backends {
        let mut row = vec![
            b.listener.clone(),
            b.vip.clone(),
            b.backend.clone(),
            b.service.clone(),
            b.state.clone(),
            b.group_weight.to_string(),
            format!("{:.3}", b.effective_weight),
            b.slots.to_string(),
            b.active_flows.to_string(),
        ];
        if checked {
            row.extend([
                or_dash(b.health.clone()),
                or_dash(b.last_probe.clone()),
                or_dash(b.probe_latency_ms.map(|ms| format!("{ms:.1}ms"))),
                or_dash(b.health_changed_secs.map(|s| format!("{s:.0}s ago"))),
            ]);
        }
        rows.add_row(row);
    }
    right_align(&mut rows, 5);
    let mut out = String::new();
    let _ = writeln!(out, "{rows}");
    let _ = writeln!(
        out,
        "{} backends, config generation {}",
        r.backends.len(),
        r.generation
    );
    for b in r.backends.iter().filter(|b| b.health_reason.is_some()) {
        let _ = writeln!(
            out,
            "{} on {}: {} ({}): {}",
            b.backend,
            b.listener,
            b.health.as_deref().unwrap_or("-"),
            b.health_check.as_deref().unwrap_or("-"),
            b.health_reason.as_deref().unwrap_or_default()
        );
    }
    out
}

pub fn render_drain(r: &DrainReport) -> String {
    if !r.changed {
        return format!(
            "backend {} already drained on {}: nothing changed (config generation {})\n",
            r.backend,
            r.listeners.join(", "),
            r.generation
        );
    }
    format!(
        "backend {} {} on {} (config generation {}){}\n",
        r.backend,
        if r.drained { "drained" } else { "undrained" },
        if r.listeners.is_empty() {
            "no listener of the running config".to_owned()
        } else {
            r.listeners.join(", ")
        },
        r.generation,
        if r.drained {
            ": no new flows, established ones continue"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_json_fields() {
        use crate::tables::assert_columns_are_fields as check;
        let listener = ListenerInfo {
            affinity_timeout_secs: Some(10),
            ..ListenerInfo::default()
        };
        check(&LISTENER_COLUMNS, &listener, &[]);
        check(&BACKEND_COLUMNS, &BackendInfo::default(), &[]);
        let checked = BackendInfo {
            health: Some("healthy".into()),
            last_probe: Some("pass: connected".into()),
            probe_latency_ms: Some(0.4),
            health_changed_secs: Some(3.0),
            ..BackendInfo::default()
        };
        check(&HEALTH_COLUMNS, &checked, &[]);
    }

    #[test]
    fn health_columns_and_reasons_show_only_for_checked_backends() {
        let plain = BackendInfo {
            listener: "demo/edge/web".into(),
            backend: "198.18.2.21:8080".into(),
            state: "ready".into(),
            ..BackendInfo::default()
        };
        let text = render_backends(&BackendsReport {
            generation: 3,
            backends: vec![plain.clone()],
        });
        assert!(!text.contains("HEALTH"), "{text}");
        let sick = BackendInfo {
            backend: "198.18.2.22:8080".into(),
            state: "unhealthy".into(),
            health: Some("unhealthy".into()),
            health_check: Some("TCP connect every 1s (demo/hc)".into()),
            health_reason: Some("3 probes failed in a row: connect: Connection refused".into()),
            health_changed_secs: Some(12.4),
            last_probe: Some("fail: connect: Connection refused".into()),
            probe_latency_ms: Some(0.25),
            ..plain.clone()
        };
        let text = render_backends(&BackendsReport {
            generation: 4,
            backends: vec![plain, sick],
        });
        assert!(text.contains("HEALTH CHANGED"), "{text}");
        let line = row(&text, &["198.18.2.22:8080", "unhealthy"]);
        assert!(line.contains("fail: connect: Connection refused"), "{line}");
        assert!(line.contains("0.2ms") && line.contains("12s ago"), "{line}");
        assert!(row(&text, &["198.18.2.21:8080"]).contains(" - "), "{text}");
        assert!(text.contains(
            "198.18.2.22:8080 on demo/edge/web: unhealthy (TCP connect every 1s (demo/hc)): 3 \
             probes failed in a row"
        ));
    }
    use switchyard_proto::{BackendInfo, ListenerInfo};

    fn row<'a>(text: &'a str, cells: &[&str]) -> &'a str {
        text.lines()
            .find(|l| cells.iter().all(|c| l.contains(c)))
            .unwrap_or_else(|| panic!("no line with {cells:?} in\n{text}"))
    }

    #[test]
    fn listeners_show_route_table_affinity_and_active_flows() {
        let text = render_listeners(&ListenersReport {
            generation: 4,
            listeners: vec![
                ListenerInfo {
                    listener: "demo/edge/web".into(),
                    protocol: "TCP".into(),
                    vip: "198.18.100.10:80".into(),
                    listener_port: 80,
                    route: "demo/web".into(),
                    backends: 2,
                    table_size: 65537,
                    affinity_timeout_secs: Some(600),
                    active_flows: 9,
                    mode: "fullnat".into(),
                },
                ListenerInfo {
                    listener: "demo/edge/idle".into(),
                    protocol: "UDP".into(),
                    ..ListenerInfo::default()
                },
            ],
        });
        row(
            &text,
            &[
                "demo/edge/web",
                "TCP",
                "198.18.100.10:80",
                "fullnat",
                "demo/web",
                "65537",
                "600s",
                "9",
            ],
        );
        let idle = row(&text, &["demo/edge/idle"]);
        assert!(idle.contains(" - "), "no route or affinity: {idle}");
        row(&text, &["2 listeners, config generation 4"]);
    }

    #[test]
    fn backends_show_state_weights_slots_and_flows() {
        let text = render_backends(&BackendsReport {
            generation: 6,
            backends: vec![BackendInfo {
                listener: "demo/edge/web".into(),
                vip: "198.18.100.10:80".into(),
                backend: "198.18.2.21:8080".into(),
                service: "demo/echo".into(),
                group_weight: 3,
                effective_weight: 1.5,
                state: "terminating".into(),
                slots: 32768,
                active_flows: 4,
                ..BackendInfo::default()
            }],
        });
        row(
            &text,
            &[
                "198.18.2.21:8080",
                "demo/echo",
                "terminating",
                "3",
                "1.500",
                "32768",
                "4",
            ],
        );
        row(&text, &["1 backends, config generation 6"]);
    }

    #[test]
    fn drain_says_what_happens_to_flows() {
        let mut report = DrainReport {
            backend: "198.18.2.21:8080".into(),
            listeners: vec!["demo/edge/web".into()],
            drained: true,
            generation: 7,
            changed: true,
        };
        assert_eq!(
            render_drain(&report),
            "backend 198.18.2.21:8080 drained on demo/edge/web (config generation 7): \
             no new flows, established ones continue\n"
        );
        report.drained = false;
        report.listeners.clear();
        assert_eq!(
            render_drain(&report),
            "backend 198.18.2.21:8080 undrained on no listener of the running config \
             (config generation 7)\n"
        );
        report.drained = true;
        report.changed = false;
        report.listeners = vec!["demo/edge/web".into()];
        assert_eq!(
            render_drain(&report),
            "backend 198.18.2.21:8080 already drained on demo/edge/web: nothing changed \
             (config generation 7)\n"
        );
    }
}
