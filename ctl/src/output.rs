//! Writing command output the way a Unix tool should.

use std::io::{self, Write};

/// Writes `text` to stdout. A reader that went away (`yardctl flows | head`)
/// is not an error: the command did its job.
pub fn emit(text: &str) -> io::Result<()> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
