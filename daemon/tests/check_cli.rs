//! `switchyard check` as an operator runs it: the binary, a file, an exit
//! status and what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(config: &Path, output: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(config)
        .args(["-o", output])
        .output()
        .expect("switchyard runs")
}

/// A file of the test's own under the target directory, so that tests
/// running in parallel never share one.
fn file(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check_cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const BROKEN: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: lb
spec:
  gatewayClassName: switchyard
  listeners:
  - name: tcp
    port: 70000
    protocol: TCP
";

#[test]
fn a_broken_file_exits_non_zero_with_file_line_what_and_why() {
    let path = file("broken.yaml", BROKEN);
    let out = check(&path, "json");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "{}:10: Gateway \"lb/edge\": spec.listeners[0].port: invalid value 70000, \
             expected 1..=65535\n",
            path.display()
        )
    );
}

#[test]
fn a_missing_file_names_it_and_says_the_os_error_once() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check_cli/no-such-file.yaml");
    let out = check(&path, "table");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{}: cannot read: ", path.display())),
        "{stderr}"
    );
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_file_that_loads_exits_zero_with_the_report_on_stdout() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/demo.yaml");
    let out = check(&path, "json");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["resources"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));
}
