//! `yardctl config check FILE` and `config diff FILE`: sending a candidate
//! file to the daemon and rendering what it says a reload would do.
//!
//! The file's contents travel in the request, so the daemon need not be
//! able to read the operator's path (another mount namespace, another
//! user's home); the path is sent only to name the file in errors.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Result;

use crate::exit::invalid;
use comfy_table::{presets, CellAlignment, Table};
use switchyard_proto::{
    CandidateConfig, ConfigCheckReport, ConfigDiffReport, ListenerChange, ListenerDiff,
    MAX_CANDIDATE_CONFIG_BYTES,
};

/// Reads `path` for the daemon, refusing what it would refuse anyway
/// (too large, not UTF-8) without sending it.
pub fn read_candidate(path: &Path) -> Result<CandidateConfig> {
    let file = path.display().to_string();
    let mut bytes = Vec::new();
    if let Err(err) = File::open(path).and_then(|f| {
        f.take(MAX_CANDIDATE_CONFIG_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
    }) {
        invalid!("reading {file}: {err}");
    }
    if bytes.len() > MAX_CANDIDATE_CONFIG_BYTES {
        invalid!(
            "{file}: larger than {} MiB, the most a config check sends to the daemon",
            MAX_CANDIDATE_CONFIG_BYTES >> 20
        );
    }
    let contents = match String::from_utf8(bytes) {
        Ok(contents) => contents,
        Err(err) => invalid!(
            "{file}: not UTF-8 (byte {}): the daemon would refuse it",
            err.utf8_error().valid_up_to()
        ),
    };
    Ok(CandidateConfig { file, contents })
}

pub fn render_check(r: &ConfigCheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: valid, {} listener{}{}",
        r.file,
        r.listeners,
        if r.listeners == 1 { "" } else { "s" },
        if r.same_as_running {
            " (identical to the running config)"
        } else {
            ""
        }
    );
    render_warnings(&mut out, &r.diagnostics);
    out
}

fn render_warnings(out: &mut String, diagnostics: &[String]) {
    if diagnostics.is_empty() {
        let _ = writeln!(out, "warnings: none");
    } else {
        let _ = writeln!(out, "warnings:");
        for d in diagnostics {
            let _ = writeln!(out, "  {d}");
        }
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

pub fn render_diff(r: &ConfigDiffReport) -> String {
    let mut out = String::new();
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(vec![
        "LISTENER",
        "PROTO",
        "VIP",
        "CHANGE",
        "SLOTS MOVED",
        "ACTIVE FLOWS",
        "LOSING BACKEND",
    ]);
    for l in &r.listeners {
        table.add_row(vec![
            l.listener.clone(),
            l.protocol.clone(),
            l.vip.clone(),
            l.change.as_str().to_owned(),
            match l.change {
                ListenerChange::Added => "-".to_owned(),
                _ => percent(l.moved_slots_fraction),
            },
            l.active_flows.to_string(),
            l.flows_on_removed_backends.to_string(),
        ]);
    }
    for index in 4..table.column_count() {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let _ = writeln!(out, "{table}");
    for l in r
        .listeners
        .iter()
        .filter(|l| l.change != ListenerChange::Unchanged)
    {
        render_details(&mut out, l);
    }
    let count = |change| r.listeners.iter().filter(|l| l.change == change).count();
    let _ = writeln!(
        out,
        "\n{} changed, {} added, {} removed, {} unchanged (against running generation {})",
        count(ListenerChange::Changed),
        count(ListenerChange::Added),
        count(ListenerChange::Removed),
        count(ListenerChange::Unchanged),
        r.running_generation
    );
    render_warnings(&mut out, &r.diagnostics);
    out
}

fn render_details(out: &mut String, l: &ListenerDiff) {
    let _ = writeln!(
        out,
        "\n{} ({} {}): {}",
        l.listener,
        l.protocol,
        l.vip,
        l.change.as_str()
    );
    for f in &l.fields {
        let _ = writeln!(out, "  ~ {}: {} -> {}", f.field, f.from, f.to);
    }
    for b in &l.backends_removed {
        let _ = match b.active_flows {
            0 => writeln!(out, "  - backend {}: no active flows", b.backend),
            n => writeln!(
                out,
                "  - backend {}: {n} active flow{} (TCP ones are reset, UDP ones rehashed)",
                b.backend,
                if n == 1 { "" } else { "s" }
            ),
        };
    }
    if l.change != ListenerChange::Added {
        for b in &l.backends_added {
            let _ = writeln!(out, "  + backend {b}");
        }
    }
    for w in &l.backends_reweighted {
        let _ = writeln!(
            out,
            "  ~ backend {}: effective weight {} -> {}",
            w.backend, w.from, w.to
        );
    }
    for c in &l.backends_state_changed {
        let _ = writeln!(out, "  ~ backend {}: {} -> {}", c.backend, c.from, c.to);
    }
    if l.change == ListenerChange::Changed {
        let _ = writeln!(
            out,
            "  new flows changing backend: {} of the hash space",
            percent(l.moved_slots_fraction)
        );
    }
}

#[cfg(test)]
mod tests {
    use switchyard_proto::{FieldChange, RemovedBackend, Reweight, StateChange};

    use super::*;

    fn listener(name: &str, change: ListenerChange) -> ListenerDiff {
        ListenerDiff {
            listener: name.into(),
            change,
            protocol: "TCP".into(),
            vip: "198.18.100.10:80".into(),
            fields: Vec::new(),
            backends_added: Vec::new(),
            backends_removed: Vec::new(),
            backends_reweighted: Vec::new(),
            backends_state_changed: Vec::new(),
            moved_slots_fraction: 0.0,
            active_flows: 0,
            flows_on_removed_backends: 0,
        }
    }

    #[test]
    fn diff_table_shows_moved_share_and_details_of_changed_listeners_only() {
        let mut web = listener("demo/edge/web", ListenerChange::Changed);
        web.moved_slots_fraction = 0.4998;
        web.active_flows = 5;
        web.flows_on_removed_backends = 3;
        web.backends_removed = vec![RemovedBackend {
            backend: "198.18.2.21:8080".into(),
            active_flows: 3,
        }];
        web.backends_reweighted = vec![Reweight {
            backend: "198.18.2.22:8080".into(),
            from: 1.0,
            to: 2.0,
        }];
        web.backends_state_changed = vec![StateChange {
            backend: "198.18.2.22:8080".into(),
            from: "ready".into(),
            to: "terminating".into(),
        }];
        web.fields = vec![FieldChange {
            field: "route".into(),
            from: "demo/a".into(),
            to: "demo/b".into(),
        }];
        let report = ConfigDiffReport {
            file: "next.yaml".into(),
            running_generation: 4,
            listeners: vec![web, listener("demo/edge/dns", ListenerChange::Unchanged)],
            diagnostics: vec![],
        };
        let text = render_diff(&report);
        assert!(text.contains("50.0%"), "{text}");
        assert!(
            text.contains("- backend 198.18.2.21:8080: 3 active flows"),
            "{text}"
        );
        assert!(text.contains("~ route: demo/a -> demo/b"), "{text}");
        assert!(
            text.contains("~ backend 198.18.2.22:8080: effective weight 1 -> 2"),
            "{text}"
        );
        assert!(
            text.contains("~ backend 198.18.2.22:8080: ready -> terminating"),
            "{text}"
        );
        assert!(!text.contains("demo/edge/dns (TCP"), "{text}");
        assert!(
            text.contains(
                "1 changed, 0 added, 0 removed, 1 unchanged (against running generation 4)"
            ),
            "{text}"
        );
    }

    #[test]
    fn candidate_over_the_size_limit_is_refused_before_sending() {
        let dir = std::env::temp_dir().join(format!("yardctl-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("huge.yaml");
        std::fs::write(&path, vec![b'#'; MAX_CANDIDATE_CONFIG_BYTES + 1]).unwrap();
        let err = read_candidate(&path).unwrap_err().to_string();
        std::fs::write(&path, "# fits\n").unwrap();
        let fits = read_candidate(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("larger than 4 MiB"), "{err}");
        assert_eq!(fits.contents, "# fits\n");
        assert_eq!(fits.file, path.display().to_string());
    }
}
