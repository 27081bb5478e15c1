//! A small client of BIRD's control socket: one command per connection,
//! every read and write under a timeout, replies bounded in size.
//!
//! BIRD answers in numbered lines (doc/reply_codes in BIRD's source):
//! `DDDD-text` opens or continues a reply and more lines follow, a line
//! starting with a space continues the previous code, and `DDDD text`
//! ends the reply. Codes 0xxx end a command that succeeded, 1xxx carry
//! table rows, 8xxx are run-time errors and 9xxx parse errors. Only the
//! final code decides; the text is kept to be shown to the operator.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longest line and longest reply read from BIRD; anything longer is an
/// error, not a reason to grow without bound.
const MAX_LINE: usize = 4096;
const MAX_REPLY: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("BIRD's control socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BIRD's control socket {path} closed before the reply ended")]
    Truncated { path: String },
    #[error("BIRD's control socket {path}: reply line not understood: {line:?}")]
    Garbled { path: String, line: String },
    #[error("BIRD's control socket {path}: reply longer than {MAX_REPLY} bytes")]
    TooLong { path: String },
    #[error("BIRD refused `{command}` ({code}): {text}")]
    Refused {
        command: String,
        code: u16,
        text: String,
    },
}

/// A complete reply: its final code and every line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
    /// The code of each line; a continuation line has its opener's.
    pub codes: Vec<u16>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("; ")
    }

    /// Each line with its code.
    pub fn coded_lines(&self) -> impl Iterator<Item = (u16, &str)> {
        self.codes
            .iter()
            .copied()
            .zip(self.lines.iter().map(String::as_str))
    }
}

/// One line of a reply, as BIRD frames it.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// `DDDD-text`, or ` text` (no code of its own): the reply goes on.
    More(Option<u16>, &'a str),
    /// `DDDD text`: the reply ends with this code.
    Last(u16, &'a str),
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    if let Some(text) = line.strip_prefix(' ') {
        return Some(Line::More(None, text));
    }
    let code = line.get(..4)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    match line.as_bytes().get(4) {
        Some(b'-') => Some(Line::More(Some(code), &line[5..])),
        Some(b' ') => Some(Line::Last(code, &line[5..])),
        None => Some(Line::Last(code, "")),
        Some(_) => None,
    }
}

/// Whether a final code says the command was carried out.
fn succeeded(code: u16) -> bool {
    code < 8000
}

/// BIRD's control socket at `path`.
#[derive(Debug, Clone)]
pub struct Birdc {
    path: String,
    timeout: Duration,
}

impl Birdc {
    pub fn new(path: &Path, timeout: Duration) -> Birdc {
        Birdc {
            path: path.display().to_string(),
            timeout,
        }
    }

    /// Runs `command` and returns BIRD's reply if it succeeded.
    pub fn run(&self, command: &str) -> Result<Reply, BirdError> {
        let io = |source| BirdError::Io {
            path: self.path.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.path).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut reader = BufReader::new(&stream);
        // BIRD greets every connection with `0001 BIRD x.y.z ready.`
        self.read_reply(&mut reader)?;
        (&stream)
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io)?;
        let reply = self.read_reply(&mut reader)?;
        if succeeded(reply.code) {
            Ok(reply)
        } else {
            Err(BirdError::Refused {
                command: command.to_owned(),
                code: reply.code,
                text: reply.text(),
            })
        }
    }

    /// One whole reply from `reader`.
    pub(super) fn read_reply(&self, reader: &mut impl BufRead) -> Result<Reply, BirdError> {
        let mut lines = Vec::new();
        let mut codes = Vec::new();
        let mut current = 0;
        let mut total = 0;
        loop {
            let mut raw = Vec::new();
            let read = reader
                .by_ref()
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut raw)
                .map_err(|source| BirdError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if read == 0 || raw.last() != Some(&b'\n') {
                return Err(if read >= MAX_LINE {
                    BirdError::TooLong {
                        path: self.path.clone(),
                    }
                } else {
                    BirdError::Truncated {
                        path: self.path.clone(),
                    }
                });
            }
            total += read;
            if total > MAX_REPLY {
                return Err(BirdError::TooLong {
                    path: self.path.clone(),
                });
            }
            let line = String::from_utf8_lossy(&raw[..raw.len() - 1]).into_owned();
            match parse_line(&line) {
                Some(Line::More(code, text)) => {
                    current = code.unwrap_or(current);
                    codes.push(current);
                    lines.push(text.to_owned());
                }
                Some(Line::Last(code, text)) => {
                    codes.push(code);
                    lines.push(text.to_owned());
                    return Ok(Reply { code, lines, codes });
                }
                None => {
                    return Err(BirdError::Garbled {
                        path: self.path.clone(),
                        line,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &str) -> Result<Reply, BirdError> {
        Birdc::new(Path::new("test"), Duration::from_secs(1)).read_reply(&mut bytes.as_bytes())
    }

    #[test]
    fn a_reconfiguration_reply_ends_with_its_last_code() {
        let reply =
            read("0002-Reading configuration from /etc/bird/bird.conf\n0003 Reconfigured\n")
                .unwrap();
        assert_eq!(reply.code, 3);
        assert_eq!(
            reply.lines,
            [
                "Reading configuration from /etc/bird/bird.conf",
                "Reconfigured"
            ]
        );
        assert!(succeeded(reply.code));
    }

    #[test]
    fn a_parse_error_is_a_failure_naming_the_file_and_line() {
        let reply = read(
            "0002-Reading configuration from b.conf\n\
             8002 /run/switchyard/bird/vips4.conf:2:1 syntax error, unexpected CF_SYM_UNDEFINED\n",
        )
        .unwrap();
        assert_eq!(reply.code, 8002);
        assert!(!succeeded(reply.code));
        assert!(reply.text().contains("vips4.conf:2:1"));
    }

    #[test]
    fn continuation_lines_belong_to_the_reply() {
        let reply = read("1002-first\n second\n0000 \n").unwrap();
        assert_eq!(reply.code, 0);
        assert_eq!(reply.lines, ["first", "second", ""]);
        assert_eq!(reply.codes, [1002, 1002, 0]);
    }

    #[test]
    fn a_reply_cut_short_or_garbled_is_an_error_not_a_success() {
        assert!(matches!(
            read("0002-Reading configuration\n"),
            Err(BirdError::Truncated { .. })
        ));
        assert!(matches!(
            read("0003 Reconfigured"),
            Err(BirdError::Truncated { .. })
        ));
        assert!(matches!(read("hello\n"), Err(BirdError::Garbled { .. })));
        assert!(matches!(read("00é3 x\n"), Err(BirdError::Garbled { .. })));
        assert!(matches!(
            read("0003xReconfigured\n"),
            Err(BirdError::Garbled { .. })
        ));
        assert!(matches!(read(""), Err(BirdError::Truncated { .. })));
    }

    #[test]
    fn endless_lines_and_replies_are_cut_off() {
        let long_line = format!("0002-{}\n", "x".repeat(MAX_LINE));
        assert!(matches!(read(&long_line), Err(BirdError::TooLong { .. })));
        let many = "1002-row\n".repeat(MAX_REPLY / 9 + 2);
        assert!(matches!(read(&many), Err(BirdError::TooLong { .. })));
    }
}
