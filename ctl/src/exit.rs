//! What yardctl's exit status tells a script: whether the daemon refused,
//! the input was wrong, or there was no daemon to ask. Each failure is
//! marked where it is raised; anything unmarked is a plain failure.

use std::fmt;

use switchyard_proto::client::ClientError;

/// Exit statuses, stable for scripts (docs/cli.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The daemon answered and said no (a drain of an unknown backend, a
    /// config check of a file it would refuse), or anything not below.
    Refused = 1,
    /// The command line or the file it names is wrong; nothing was asked.
    /// Also what clap exits with on a usage error.
    InvalidInput = 2,
    /// No daemon answered on the control socket (no socket, nobody
    /// listening, not allowed, timed out, or an answer yardctl cannot read).
    NoDaemon = 3,
}

/// A failure caused by what the user typed or the file they named.
#[derive(Debug)]
pub struct InvalidInput(pub String);

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// The exit status for `err`: the first marked cause in its chain.
pub fn code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<InvalidInput>() {
            return ExitCode::InvalidInput;
        }
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::Refused(_) => ExitCode::Refused,
                _ => ExitCode::NoDaemon,
            };
        }
    }
    ExitCode::Refused
}

/// `bail!` for invalid input.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::InvalidInput(format!($($arg)*))))
    };
}
pub(crate) use invalid;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn each_kind_of_failure_has_its_own_status() {
        let no_daemon = anyhow::Error::new(ClientError::NoSocket {
            path: PathBuf::from("/run/x.sock"),
        })
        .context("asking for status");
        let refused = anyhow::Error::new(ClientError::Refused("no such backend".into()));
        let invalid = anyhow::Error::new(InvalidInput("bad address".into())).context("drain");
        let other = anyhow::anyhow!("the daemon would refuse this config");
        assert_eq!(code(&no_daemon), ExitCode::NoDaemon);
        assert_eq!(code(&refused), ExitCode::Refused);
        assert_eq!(code(&invalid), ExitCode::InvalidInput);
        assert_eq!(code(&other), ExitCode::Refused);
        let statuses = [
            ExitCode::Refused as i32,
            ExitCode::InvalidInput as i32,
            ExitCode::NoDaemon as i32,
        ];
        assert_eq!(statuses, [1, 2, 3]);
    }
}
