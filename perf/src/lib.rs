//! Switchyard's benchmarks: the packet generator's frames, the network
//! benchmark harness behind `make bench`, its results file and the tables
//! docs/performance.md shows from it. Every figure is taken beside a
//! baseline measured in the same run, and reported as a ratio; a figure
//! must never reach the docs except through the results file, and nothing
//! here asserts a speed in a test (these machines are shared and noisy).
//! The crate drives the others from outside, as an operator would, and
//! must never become a dependency of any of them.

pub mod generator;
pub mod goals;
pub mod health;
pub mod memory;
pub mod netbench;
pub mod pktgen;
pub mod report;
pub mod summary;
pub mod vmbench;
