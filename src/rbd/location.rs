//! `rbd://<fsid>/<pool>/<image>/<snapshot>`: the location Glance's RBD store
//! reads, written and read the way glance_store and Nova do.
//!
//! glance_store builds it with each part percent-encoded (Python's
//! `urllib.parse.quote(part, '')`: everything but ASCII letters, digits and
//! `_.-~`, as UTF-8 bytes), and both it and Nova percent-decode each part
//! when they parse one. So a name with `%` in it must be written encoded,
//! or `x%41` is read — and deleted by Glance — as `xA`.

use std::fmt;

/// The scheme every location starts with.
const SCHEME: &str = "rbd://";

/// A snapshot of an image in a cluster, as a location names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The cluster's fsid.
    pub fsid: String,
    /// Pool name.
    pub pool: String,
    /// Image name.
    pub image: String,
    /// Snapshot name.
    pub snapshot: String,
}

/// Why a string is not a location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "location {0:?} is not rbd://fsid/pool/image/snapshot (each part percent-encoded, none empty)"
)]
pub struct BadLocation(pub String);

impl Location {
    /// Parse a location, percent-decoding each of its four parts.
    pub fn parse(text: &str) -> Result<Location, BadLocation> {
        let bad = || BadLocation(text.to_string());
        let rest = text.strip_prefix(SCHEME).ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [fsid, pool, image, snapshot] = parts.as_slice() else {
            return Err(bad());
        };
        if [fsid, pool, image, snapshot].iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Location {
            fsid: decode(fsid).ok_or_else(bad)?,
            pool: decode(pool).ok_or_else(bad)?,
            image: decode(image).ok_or_else(bad)?,
            snapshot: decode(snapshot).ok_or_else(bad)?,
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/{}/{}/{}",
            encode(&self.fsid),
            encode(&self.pool),
            encode(&self.image),
            encode(&self.snapshot)
        )
    }
}

/// Percent-encode every byte but the unreserved ones.
fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || b"_.-~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-decode as Python's `unquote` does (a `%` not followed by two hex
/// digits stays as it is); `None` when the bytes are not UTF-8, which no
/// name of ours can be.
fn decode(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(image: &str) -> Location {
        Location {
            fsid: "9b70-f51d".into(),
            pool: "images".into(),
            image: image.into(),
            snapshot: "snap".into(),
        }
    }

    #[test]
    fn plain_names_are_written_as_they_are() {
        assert_eq!(
            loc("3f2a-uuid_x.y~z").to_string(),
            "rbd://9b70-f51d/images/3f2a-uuid_x.y~z/snap"
        );
    }

    #[test]
    fn names_glance_would_decode_are_encoded() {
        // glance_store: quote('x%41', '') == 'x%2541'; quote('a b:c', '') == 'a%20b%3Ac'
        assert_eq!(
            loc("x%41").to_string(),
            "rbd://9b70-f51d/images/x%2541/snap"
        );
        assert_eq!(
            loc("a b:c+é").to_string(),
            "rbd://9b70-f51d/images/a%20b%3Ac%2B%C3%A9/snap"
        );
    }

    #[test]
    fn odd_names_round_trip() {
        for name in [
            "x%41", "%", "%%41", "a b", "é-ü", "a+b", "x%4", "100%", "a?b#c",
        ] {
            let written = loc(name).to_string();
            assert_eq!(Location::parse(&written), Ok(loc(name)), "{written}");
        }
    }

    #[test]
    fn parsing_decodes_like_glance() {
        // what Glance (unquote) makes of locations others wrote
        let parsed = Location::parse("rbd://f/images/x%41/snap").expect("valid");
        assert_eq!(parsed.image, "xA");
        let parsed = Location::parse("rbd://f/images/100%/snap").expect("valid");
        assert_eq!(parsed.image, "100%");
        let parsed = Location::parse("rbd://f/my%2Fpool/i/snap").expect("valid");
        assert_eq!(parsed.pool, "my/pool");
    }

    #[test]
    fn malformed_locations_are_refused() {
        for bad in [
            "rbd://f/p/i",
            "rbd://f/p/i/s/x",
            "rbd://f//i/snap",
            "http://f/p/i/snap",
            "rbd://f/p/%FF/snap",
            "",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
