//! Gateway API resources in, a validated `Snapshot` out. Pure: no sockets,
//! no threads, no clocks.
pub mod snapshot;
