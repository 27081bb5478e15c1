//! What the daemon's namespace tests share: whether they can run, and
//! `ip` inside the namespace the calling thread is in.

use std::process::Command;

/// Whether this process may make network namespaces; says so when not.
pub fn is_root() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipped: network namespaces need root");
    }
    root
}

/// Runs `ip args`, panicking with its error output if it fails; returns
/// what it printed.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
