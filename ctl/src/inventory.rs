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

pub fn render_backends(r: &BackendsReport) -> String {
    let mut rows = table(&BACKEND_COLUMNS);
    for b in &r.backends {
        rows.add_row(vec![
            b.listener.clone(),
            b.vip.clone(),
            b.backend.clone(),
            b.service.clone(),
            b.state.clone(),
            b.group_weight.to_string(),
            format!("{:.3}", b.effective_weight),
            b.slots.to_string(),
            b.active_flows.to_string(),
        ]);
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
