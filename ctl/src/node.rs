//! `yardctl node`: this LB node's announcements and the peers it hears.

use std::fmt::Write as _;

use switchyard_proto::NodeReport;

use crate::tables::{right_align, table};

pub fn render_node(r: &NodeReport) -> String {
    let mut out = format!(
        "node {}{}\n",
        r.name,
        if r.drained {
            ": drained, nothing announced (yardctl node undrain to announce again)"
        } else {
            ""
        }
    );
    if r.announcements.is_empty() {
        out.push_str("no VIP to announce: no served Gateway's class sets spec.announce\n");
    } else {
        let mut announcements = table(&["ADDRESS", "MODE", "GATEWAY", "STATE", "DETAIL"]);
        for a in &r.announcements {
            announcements.add_row(vec![
                a.address.clone(),
                a.mode.clone(),
                a.gateway.clone(),
                a.state.clone(),
                a.detail.clone(),
            ]);
        }
        let _ = writeln!(out, "\n{announcements}");
    }
    if !r.peers.is_empty() {
        let mut peers = table(&["PEER", "ADDRESS", "STATE", "LAST HEARD MS"]);
        for p in &r.peers {
            peers.add_row(vec![
                p.name.clone(),
                p.address.clone(),
                p.state.clone(),
                p.last_heard_ms.to_string(),
            ]);
        }
        right_align(&mut peers, 3);
        let _ = writeln!(out, "\n{peers}");
    }
    out
}

#[cfg(test)]
mod tests {
    use switchyard_proto::{AnnouncementStatus, PeerStatus};

    use super::*;
    use crate::tables::assert_columns_are_fields;

    fn report() -> NodeReport {
        NodeReport {
            name: "lb-a".into(),
            drained: false,
            announcements: vec![AnnouncementStatus {
                address: "198.18.0.10".into(),
                mode: "L2".into(),
                gateway: "lb/edge".into(),
                state: "standby".into(),
                detail: "owner lb-b".into(),
            }],
            peers: vec![PeerStatus {
                name: "lb-b".into(),
                address: "198.18.1.2".into(),
                state: "alive".into(),
                last_heard_ms: 120,
            }],
        }
    }

    #[test]
    fn the_tables_show_every_announcement_and_peer() {
        let text = render_node(&report());
        assert!(text.starts_with("node lb-a\n"), "{text}");
        assert!(
            text.contains("198.18.0.10") && text.contains("owner lb-b"),
            "{text}"
        );
        assert!(text.contains("lb-b") && text.contains("120"), "{text}");
    }

    #[test]
    fn columns_are_json_fields() {
        let r = report();
        assert_columns_are_fields(
            &["ADDRESS", "MODE", "GATEWAY", "STATE", "DETAIL"],
            &r.announcements[0],
            &[],
        );
        assert_columns_are_fields(&["ADDRESS", "STATE", "LAST HEARD MS"], &r.peers[0], &[]);
    }

    #[test]
    fn a_drained_node_says_so() {
        let text = render_node(&NodeReport {
            drained: true,
            ..report()
        });
        assert!(text.contains("drained, nothing announced"), "{text}");
    }
}
