//! Human rendering of `yardctl listeners`, `backends` and `drain`.

use std::fmt::Write as _;

use crate::proto::{BackendsReport, DrainReport, ListenersReport};
use crate::tables::{right_align, table};

pub fn render_listeners(r: &ListenersReport) -> String {
    let mut rows = table(&[
        "LISTENER", "PROTO", "VIP", "PORT", "ROUTE", "BACKENDS", "TABLE", "AFFINITY", "FLOWS",
    ]);
    for l in &r.listeners {
        rows.add_row(vec![
            l.listener.clone(),
            l.protocol.clone(),
            l.vip.clone(),
            l.listener_port.to_string(),
            if l.route.is_empty() {
                "-".to_owned()
            } else {
                l.route.clone()
            },
            l.backends.to_string(),
            l.table_size.to_string(),
            l.affinity_timeout_secs
                .map_or_else(|| "-".to_owned(), |t| format!("ClientIP {t}s")),
            l.active_flows.to_string(),
        ]);
    }
    right_align(&mut rows, 5);
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
    let mut rows = table(&[
        "LISTENER",
        "VIP",
        "BACKEND",
        "SERVICE",
        "STATE",
        "GROUP WEIGHT",
        "WEIGHT",
        "SLOTS",
        "FLOWS",
    ]);
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
