//! Switchyard's benchmarks: the packet generator's frames and the network
//! benchmark harness behind `make bench`. Every figure is taken beside a
//! baseline measured in the same run, and reported as a ratio.

pub mod generator;
pub mod netbench;
pub mod pktgen;
pub mod summary;
