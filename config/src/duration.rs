//! Gateway API `Duration` (GEP-2257): one to four `<number><unit>` parts,
//! each number at most five digits, units `h`, `m`, `s` and `ms`, as in
//! `1h30m` or `500ms`; the CRD pattern is
//! `^([0-9]{1,5}(h|m|s|ms)){1,4}$`. The grammar is a strict subset of Go's
//! `time.ParseDuration`, so an API server's CEL `duration()` reads every
//! value this module accepts the same way. Nothing here bounds a value:
//! which durations make sense is the field's to say.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::excerpt::Quoted;

/// Parts a duration may have, and digits a part's number may have.
const MAX_PARTS: usize = 4;
const MAX_DIGITS: usize = 5;

/// Why a text is not a GEP-2257 duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is not a duration: one to four parts of up to five digits and a unit h, m, s or ms \
     (e.g. 1s, 500ms, 1m30s)",
    Quoted(.0)
)]
pub struct DurationError(pub String);

/// Reads `text` as GEP-2257 defines it.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let refuse = || DurationError(text.to_owned());
    let mut rest = text.as_bytes();
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        parts += 1;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if parts > MAX_PARTS || digits == 0 || digits > MAX_DIGITS {
            return Err(refuse());
        }
        // At most five ASCII digits: always a u64.
        let number: u64 = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(refuse)?;
        rest = &rest[digits..];
        let (unit, length) = match rest {
            [b'm', b's', ..] => (Duration::from_millis(1), 2),
            [b'h', ..] => (Duration::from_secs(3600), 1),
            [b'm', ..] => (Duration::from_secs(60), 1),
            [b's', ..] => (Duration::from_secs(1), 1),
            _ => return Err(refuse()),
        };
        rest = &rest[length..];
        // Four parts of 99999h stay far below `Duration::MAX`.
        total += unit * u32::try_from(number).map_err(|_| refuse())?;
    }
    if parts == 0 {
        return Err(refuse());
    }
    Ok(total)
}

/// `duration` as a GEP-2257 text, largest units first (`1m30s`, `0s`),
/// for messages that quote a value back. Below a millisecond is dropped:
/// no value read from a config has it.
pub struct Shown(pub Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        let (hours, millis) = (millis / 3_600_000, millis % 3_600_000);
        let (minutes, millis) = (millis / 60_000, millis % 60_000);
        let (seconds, millis) = (millis / 1000, millis % 1000);
        for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s"), (millis, "ms")] {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

/// An optional `Duration` field, judged while it is the innermost value so
/// that an error names the field and its line.
pub(crate) fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct DurationText;
    impl Visitor<'_> for DurationText {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as 1s or 500ms")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
    }
    struct Wrapped(Duration);
    impl<'de> Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(DurationText).map(Wrapped)
        }
    }
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gep_2257_examples_read_as_their_sum() {
        for (text, millis) in [
            ("0s", 0),
            ("1s", 1000),
            ("500ms", 500),
            ("1h30m", 5_400_000),
            ("1h1m1s1ms", 3_661_001),
            ("99999ms", 99_999),
            ("1s1s", 2000),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_millis(millis)), "{text}");
        }
    }

    #[test]
    fn what_the_crd_pattern_refuses_is_refused() {
        for text in [
            "",
            "1",
            "s",
            "1.5s",
            "-1s",
            "1us",
            "1ns",
            "1d",
            "100000s",
            "1h1m1s1ms1h",
            " 1s",
            "1s ",
            "1S",
            "1m s",
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains("is not a duration"), "{text}: {error}");
        }
    }

    #[test]
    fn display_writes_a_text_parse_reads_back() {
        for millis in [0, 1, 999, 1000, 1500, 60_000, 3_600_000, 3_661_001] {
            let d = Duration::from_millis(millis);
            assert_eq!(parse(&Shown(d).to_string()), Ok(d), "{millis}");
        }
        assert_eq!(
            Shown(Duration::from_millis(90_500)).to_string(),
            "1m30s500ms"
        );
    }
}
