//! Commands in a guest, over its second serial port.
//!
//! The guest's `/init` (`vm-tests/vm/init`) runs a non-interactive shell on
//! ttyS1 with echo off, which qemu connects to a Unix socket on the host.
//! Each script runs in a subshell and is followed by a marker line that
//! carries its exit status and a sequence number, so the reply to one
//! script can never be taken for another's. This module owns that framing;
//! it never interprets what the commands print.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::poll::poll_until;

/// A script's outcome.
#[derive(Debug, Clone)]
pub struct Ran {
    /// What it printed, stdout and stderr interleaved.
    pub output: String,
    /// Its exit status (the last command's).
    pub status: i32,
}

/// The host end of the guest's command shell.
#[derive(Debug)]
pub struct Console {
    stream: UnixStream,
    /// Bytes read past the last marker (none in practice: one script at a
    /// time).
    pending: Vec<u8>,
    sequence: u64,
}

impl Console {
    /// Connects to qemu's socket for ttyS1, waiting for qemu to create it.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Console> {
        let what = format!("qemu's command socket {}", socket.display());
        let stream = poll_until(timeout, &what, || match UnixStream::connect(socket) {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                Ok(None)
            }
            Err(e) => Err(anyhow!(e).context(format!("connecting to {}", socket.display()))),
        })?;
        Ok(Console {
            stream,
            pending: Vec::new(),
            sequence: 0,
        })
    }

    /// A console over an already connected stream (a shell's stdin and
    /// stdout).
    pub fn over(stream: UnixStream) -> Console {
        Console {
            stream,
            pending: Vec::new(),
            sequence: 0,
        }
    }

    /// Runs `script` (any shell text, here-documents included) in a
    /// subshell of the guest and returns what it printed and its status.
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<Ran> {
        self.sequence += 1;
        let marker = format!("@@yard-done-{}", self.sequence);
        // The marker's text is split in the command so that the command
        // itself, were it ever echoed, cannot end the wait.
        let framed = format!(
            "(\n{script}\n) </dev/null\nyard_status=$?; echo \"\"; \
             echo \"@@yard-\"\"done-{} $yard_status@@\"\n",
            self.sequence
        );
        self.stream
            .write_all(framed.as_bytes())
            .context("writing to the guest's command shell")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ran) = self.take_reply(&marker)? {
                return Ok(ran);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the guest did not finish within {timeout:?}: {}\n--- printed so far ---\n{}",
                    first_line(script),
                    String::from_utf8_lossy(&self.pending)
                );
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut buf = [0u8; 16 * 1024];
            match self.stream.read(&mut buf) {
                Ok(0) => bail!(
                    "the guest's command shell closed (did the guest stop?) while running: {}",
                    first_line(script)
                ),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(anyhow!(e).context("reading the guest's command shell")),
            }
        }
    }

    /// Runs `script` and fails, with what it printed, unless it exits 0.
    pub fn check(&mut self, script: &str, timeout: Duration) -> Result<String> {
        let ran = self.run(script, timeout)?;
        if ran.status != 0 {
            bail!(
                "in the guest, `{}` exited with {}:\n{}",
                first_line(script),
                ran.status,
                ran.output
            );
        }
        Ok(ran.output)
    }

    /// The reply ending in `marker`, once all of it has arrived.
    fn take_reply(&mut self, marker: &str) -> Result<Option<Ran>> {
        let text = String::from_utf8_lossy(&self.pending);
        let Some(at) = text.find(marker) else {
            return Ok(None);
        };
        let rest = &text[at + marker.len()..];
        let Some(end) = rest.find("@@") else {
            return Ok(None);
        };
        let status: i32 = rest[..end]
            .trim()
            .parse()
            .with_context(|| format!("reading the exit status in {:?}", &rest[..end]))?;
        let mut output = text[..at].to_owned();
        // The blank `echo ""` before the marker ends a last line that had
        // no newline of its own; it is not the script's.
        if output.ends_with('\n') {
            output.pop();
        }
        let consumed = at + marker.len() + end + 2;
        let after = text[consumed..]
            .trim_start_matches('\n')
            .as_bytes()
            .to_vec();
        self.pending = after;
        Ok(Some(Ran { output, status }))
    }
}

/// A shell script that writes `contents` to `path` in the guest, as a
/// here-document whose delimiter cannot occur in `contents`.
pub fn write_file_script(path: &str, contents: &str) -> String {
    let mut delimiter = String::from("YARD_EOF");
    while contents.lines().any(|line| line == delimiter) {
        delimiter.push('_');
    }
    let newline = if contents.ends_with('\n') { "" } else { "\n" };
    format!("cat > '{path}' <<'{delimiter}'\n{contents}{newline}{delimiter}")
}

fn first_line(script: &str) -> &str {
    script.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console_with(pending: &str) -> Console {
        let (stream, _other) = UnixStream::pair().unwrap();
        Console {
            stream,
            pending: pending.as_bytes().to_vec(),
            sequence: 0,
        }
    }

    #[test]
    fn a_reply_is_what_came_before_its_marker_and_its_status() {
        let mut c = console_with("hello\nworld\n\n@@yard-done-3 7@@\nnext");
        let ran = c.take_reply("@@yard-done-3").unwrap().unwrap();
        assert_eq!(ran.output, "hello\nworld\n");
        assert_eq!(ran.status, 7);
        assert_eq!(c.pending, b"next");
    }

    #[test]
    fn a_marker_not_yet_complete_waits() {
        let mut c = console_with("out\n\n@@yard-done-1 0");
        assert!(c.take_reply("@@yard-done-1").unwrap().is_none());
    }

    #[test]
    fn another_scripts_marker_does_not_end_the_wait() {
        let mut c = console_with("@@yard-done-1 0@@\n");
        assert!(c.take_reply("@@yard-done-2").unwrap().is_none());
    }

    /// The framing against a real shell on the host, as the guest's runs
    /// it: stdin and stdout on one stream.
    fn host_shell() -> (Console, std::process::Child) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let stdin =
            std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs.try_clone().unwrap()));
        let stdout = std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs));
        let child = std::process::Command::new("sh")
            .stdin(stdin)
            .stdout(stdout)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (Console::over(ours), child)
    }

    #[test]
    fn a_script_returns_what_it_printed_and_its_own_exit_status() {
        let (mut c, mut child) = host_shell();
        let t = Duration::from_secs(10);
        let ran = c.run("echo one; echo two; exit 3", t).unwrap();
        assert_eq!((ran.output.as_str(), ran.status), ("one\ntwo\n", 3));
        let ran = c.run("printf 'no newline'", t).unwrap();
        assert_eq!((ran.output.as_str(), ran.status), ("no newline", 0));
        assert!(c.check("false", t).is_err());
        let dir = std::env::temp_dir().join(format!("swy-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        let contents = "a: 1\nYARD_EOF\n$HOME `x`\n";
        c.check(&write_file_script(file.to_str().unwrap(), contents), t)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), contents);
        std::fs::remove_dir_all(&dir).unwrap();
        crate::process::kill_and_reap(&mut child);
    }

    #[test]
    fn a_here_document_delimiter_never_occurs_in_the_file() {
        let script = write_file_script("/etc/x", "a\nYARD_EOF\nb");
        assert!(script.ends_with("\nYARD_EOF_"), "{script}");
        assert!(script.contains("<<'YARD_EOF_'"));
    }
}
