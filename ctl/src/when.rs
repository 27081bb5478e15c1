//! Times as an operator reads them: dates in UTC (the daemon and yardctl
//! may run in different time zones, UTC is the one they share) and ages in
//! the two largest units. JSON keeps the daemon's unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-12-06 11:20:31 UTC`; the raw number when it is no date.
pub fn date(unix: u64) -> String {
    match i64::try_from(unix)
        .ok()
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
    {
        Some(at) => at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{unix} (unix time)"),
    }
}

/// `2026-12-06 11:20:31 UTC, 5m 2s ago`.
pub fn date_and_age(unix: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.checked_sub(unix) {
        Some(age) => format!("{}, {} ago", date(unix), duration(age)),
        None => date(unix),
    }
}

/// `3d 4h`, `5m 2s`, `42s`: the largest unit and the next one, if any.
pub fn duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    for (i, &(size, unit)) in UNITS.iter().enumerate() {
        if secs < size {
            continue;
        }
        let mut text = format!("{}{unit}", secs / size);
        if let Some(&(next, next_unit)) = UNITS.get(i + 1) {
            let count = secs % size / next;
            if count > 0 {
                text.push_str(&format!(" {count}{next_unit}"));
            }
        }
        return text;
    }
    "0s".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_and_readable() {
        assert_eq!(date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date(1_796_556_031), "2026-12-06 11:20:31 UTC");
        assert_eq!(date(u64::MAX), format!("{} (unix time)", u64::MAX));
    }

    #[test]
    fn durations_keep_two_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(302), "5m 2s");
        assert_eq!(duration(3_600), "1h");
        assert_eq!(duration(3_661), "1h 1m");
        assert_eq!(duration(273_600 + 59), "3d 4h");
        assert_eq!(duration(86_405), "1d");
    }

    #[test]
    fn a_date_in_the_future_has_no_age() {
        assert_eq!(date_and_age(u64::MAX / 2), date(u64::MAX / 2));
    }
}
