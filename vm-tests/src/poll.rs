//! Waiting for a condition with a deadline instead of sleeping for a guess.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// How long to pause between two checks of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Calls `check` until it returns `Ok(Some(_))` or `timeout` passes. An error
/// from `check` ends the wait at once.
pub fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
