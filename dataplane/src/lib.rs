//! The Switchyard appliance: AF_XDP workers that decide, rewrite and forward
//! packets for VIP listeners, and the control plane around them.

pub mod neighbor;
pub mod packet;
