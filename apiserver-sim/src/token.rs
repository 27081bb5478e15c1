//! Continue tokens: base64url (no padding) JSON, opaque to clients, as the
//! real server encodes them.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a continue token carries: the revision the list is served at and
/// the last key returned, as the real server's token does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continue {
    pub v: String,
    pub rv: u64,
    pub start: String,
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn encode(token: &Continue) -> String {
    let bytes = serde_json::to_vec(token).unwrap_or_default();
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (at, b)| n | (u32::from(*b) << (16 - 8 * at)));
        for at in 0..=group.len() {
            out.push(ALPHABET[((n >> (18 - 6 * at)) & 63) as usize] as char);
        }
    }
    out
}

pub fn decode(text: &str) -> Result<Continue, ApiError> {
    let invalid = || ApiError::BadRequest(format!("continue key is not valid: {text:?}"));
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits = 0u32;
    let mut count = 0;
    for c in text.trim_end_matches('=').bytes() {
        let value = ALPHABET.iter().position(|a| *a == c).ok_or_else(invalid)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for start in ["", "a", "ns/name", "namespace-x/a-longer-name"] {
            let token = Continue {
                v: "meta.k8s.io/v1".into(),
                rv: 42,
                start: start.into(),
            };
            assert_eq!(decode(&encode(&token)).unwrap(), token);
        }
        assert!(decode("not*base64").is_err());
    }
}
