//! yardctl's exit statuses as a script sees them, without a daemon: input
//! refused before anything is asked (2), and no daemon to ask (3).

use std::process::Command;

fn yardctl(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_yardctl"))
        .args(args)
        .output()
        .expect("running yardctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn missing_socket() -> String {
    let dir = std::env::temp_dir().join(format!("yardctl-exit-{}", std::process::id()));
    dir.join("control.sock").display().to_string()
}

#[test]
fn no_daemon_is_status_3() {
    let socket = missing_socket();
    for args in [
        vec!["status"],
        vec!["stats"],
        vec!["drain", "198.18.2.21:8080"],
    ] {
        let mut all = vec!["--control-socket", socket.as_str()];
        all.extend(args);
        let (code, stderr) = yardctl(&all);
        assert_eq!(code, Some(3), "{all:?}: {stderr}");
        assert!(stderr.contains(&socket), "{stderr}");
    }
}

#[test]
fn invalid_input_is_status_2_and_asks_nothing() {
    let socket = missing_socket();
    let cases: [&[&str]; 5] = [
        &["drain", "not-an-address"],
        &["explain", "tcp", "198.18.1.10", "198.18.100.10:80"],
        &["stats", "--interval", "0"],
        &["config", "check", "/nonexistent/switchyard.yaml"],
        &["no-such-command"],
    ];
    for args in cases {
        let mut all = vec!["--control-socket", socket.as_str()];
        all.extend(args);
        let (code, stderr) = yardctl(&all);
        // Status 2, not 3: the input was refused before the socket was tried.
        assert_eq!(code, Some(2), "{all:?}: {stderr}");
    }
}
