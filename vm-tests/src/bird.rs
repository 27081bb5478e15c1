//! BIRD 2 in a test namespace: the samples of deploy/bird/ filled in with
//! a lab's addresses, a `bird` process of the test's own (foreground, its
//! own config, control socket and pid file in a temporary folder, killed
//! by PID on drop), and `birdc` against that socket. Never the system's
//! BIRD, never its files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::poll::poll_until;
use crate::process::{kill_and_reap, run_with_timeout, workspace_root};
use crate::tempdir::TempDir;

const START_TIMEOUT: Duration = Duration::from_secs(10);
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the samples include Switchyard's route files from.
pub const SAMPLE_ROUTE_DIR: &str = "/run/switchyard/bird";

/// Why BIRD cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    for tool in ["bird", "birdc"] {
        match run_with_timeout(Command::new(tool).arg("--version"), BIRDC_TIMEOUT) {
            Ok(_) => {}
            Err(e) => {
                return Some(format!(
                    "{tool} cannot run ({e:#}): `make deps` installs bird2"
                ))
            }
        }
    }
    None
}

/// `deploy/bird/NAME`, as shipped.
pub fn sample(name: &str) -> Result<String> {
    let path = workspace_root().join("deploy/bird").join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// `config` with `define NAME = ...;` set to `value`; the sample must
/// define it.
pub fn define(config: &str, name: &str, value: &str) -> Result<String> {
    let prefix = format!("define {name} =");
    let mut found = false;
    let lines: Vec<String> = config
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                found = true;
                format!("define {name} = {value};")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !found {
        bail!("the sample defines no {name}");
    }
    Ok(lines.join("\n") + "\n")
}

/// A `bird -f` in a namespace, killed (SIGKILL, by its PID) on drop.
#[derive(Debug)]
pub struct Bird {
    child: Option<Child>,
    socket: PathBuf,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Bird {
    /// Starts BIRD in `ns` on `config` (logging to its own file rather
    /// than syslog) and waits until its control socket answers.
    pub fn start(ns: &Netns, role: &str, config: &str) -> Result<Bird> {
        let dir = TempDir::new(&format!("bird-{role}"))?;
        let log_path = dir.path().join("bird.log");
        let config = config.replace(
            "log syslog all;",
            &format!("log \"{}\" all;", log_path.display()),
        );
        let config_path = dir.write("bird.conf", &config)?;
        let socket = dir.path().join("bird.ctl");
        let out = File::create(dir.path().join("bird.out"))?;
        let mut cmd = ns.command("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&config_path)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.path().join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd.spawn().context("starting bird")?;
        let mut bird = Bird {
            child: Some(child),
            socket,
            log_path,
            _dir: dir,
        };
        let what = format!("BIRD ({role}) to answer on its control socket");
        poll_until(START_TIMEOUT, &what, || {
            if let Some(status) = bird
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("bird ({role}) exited ({status}):\n{}", bird.output());
            }
            Ok(bird.birdc(&["show", "status"]).ok())
        })?;
        Ok(bird)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `birdc -s SOCKET ARGS`, which must succeed.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = run_with_timeout(
            Command::new("birdc").arg("-s").arg(&self.socket).args(args),
            BIRDC_TIMEOUT,
        )?;
        if !out.status.success() {
            bail!("birdc {}: {} {}", args.join(" "), out.stdout, out.stderr);
        }
        Ok(out.stdout)
    }

    /// Its log and what it printed.
    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}{}",
            read(&self.log_path),
            read(&self.log_path.with_file_name("bird.out"))
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn define_replaces_exactly_the_named_definition() {
        let text = "define A = 1;\ndefine AB = 2;\nrouter id A;\n";
        assert_eq!(
            define(text, "A", "3").unwrap(),
            "define A = 3;\ndefine AB = 2;\nrouter id A;\n"
        );
        assert!(define(text, "C", "1").is_err());
    }
}
