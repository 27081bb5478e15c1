//! The node's BGP sessions as BIRD reports them (`show protocols all`),
//! shown by `yardctl node` beside the announcements: a route BIRD holds
//! reaches no router while its session is down.

use super::birdc::Reply;

/// BIRD's code of a protocol's summary line, and of its details.
const PROTOCOL_LINE: u16 = 1002;
const DETAIL_LINES: u16 = 1006;

/// One BGP protocol of BIRD's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The protocol's name in bird.conf (`router4`).
    pub protocol: String,
    /// `Neighbor address:`, empty if BIRD did not say.
    pub neighbor: String,
    /// `BGP state:` (Established, Active, Idle, ...).
    pub state: String,
}

impl Session {
    pub fn established(&self) -> bool {
        self.state == "Established"
    }
}

/// The BGP protocols in a reply to `show protocols all`; other protocols,
/// and lines not understood, are skipped.
pub fn parse(reply: &Reply) -> Vec<Session> {
    let mut sessions: Vec<Session> = Vec::new();
    let mut in_bgp = false;
    for (code, line) in reply.coded_lines() {
        match code {
            PROTOCOL_LINE => {
                let fields: Vec<&str> = line.split_whitespace().collect();
                in_bgp = fields.get(1) == Some(&"BGP");
                if in_bgp {
                    sessions.push(Session {
                        protocol: fields[0].to_owned(),
                        neighbor: String::new(),
                        state: String::new(),
                    });
                }
            }
            DETAIL_LINES if in_bgp => {
                let Some(session) = sessions.last_mut() else {
                    continue;
                };
                let line = line.trim();
                if let Some(state) = line.strip_prefix("BGP state:") {
                    session.state = state.trim().to_owned();
                } else if let Some(address) = line.strip_prefix("Neighbor address:") {
                    session.neighbor = address.trim().to_owned();
                }
            }
            _ => {}
        }
    }
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show protocols all` from BIRD 2.0.12, shortened.
    const SHOW_PROTOCOLS_ALL: &str = "\
2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     02:19:29.226  
1006-
1002-switchyard_vips4 Static     master4    up     02:19:29.226  
1006-  Channel ipv4
     State:          UP
     Neighbor address: 10.9.9.9
 
1002-router4    BGP        ---        up     02:19:31.001  Established   
1006-  BGP state:          Established
     Neighbor address: 198.18.2.1
     Neighbor AS:      65000
   Channel ipv4
     State:          UP
 
1002-router6    BGP        ---        start  02:19:29.226  Idle          
1006-  BGP state:          Idle
     Neighbor address: 2001:db8:2::1
 
0000 
";

    fn reply() -> Reply {
        let birdc = super::super::birdc::Birdc::new(
            std::path::Path::new("test"),
            std::time::Duration::from_secs(1),
        );
        birdc
            .read_reply(&mut SHOW_PROTOCOLS_ALL.as_bytes())
            .unwrap()
    }

    #[test]
    fn bgp_protocols_are_listed_with_their_neighbour_and_state() {
        let sessions = parse(&reply());
        assert_eq!(
            sessions,
            [
                Session {
                    protocol: "router4".into(),
                    neighbor: "198.18.2.1".into(),
                    state: "Established".into(),
                },
                Session {
                    protocol: "router6".into(),
                    neighbor: "2001:db8:2::1".into(),
                    state: "Idle".into(),
                },
            ]
        );
        assert!(sessions[0].established());
        assert!(!sessions[1].established());
    }
}
