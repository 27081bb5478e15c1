//! Next-hop resolution from the kernel tables.
