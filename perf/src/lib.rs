//! Switchyard's benchmarks: the packet generator's frames and the network
//! benchmark harness behind `make bench`. Every figure is taken beside a
//! baseline measured in the same run, and reported as a ratio. The crate
//! drives the others from outside, as an operator would, and must never
//! become a dependency of any of them.

pub mod generator;
pub mod netbench;
pub mod pktgen;
pub mod summary;
