//! A record's community id held without an allocation.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes of a community id v1: `1:` and 28 characters of padded base64.
const LEN: usize = 30;

/// [`super::ConnRecord::community_id`]: a string of the length of a community id is held
/// inline (what every processor makes, so no allocation per record where it is made, decoded
/// and freed), any other on the heap (a damaged or hostile record's, for validation to
/// reject). Reads as a `str`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CommunityId(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// Always the bytes of a `str` (copied from one).
    Inline([u8; LEN]),
    Heap(String),
}

impl CommunityId {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied from a `str`, so UTF-8: the fallback is never taken.
            Repr::Inline(b) => std::str::from_utf8(b).unwrap_or_default(),
            Repr::Heap(s) => s,
        }
    }
}

impl Default for CommunityId {
    fn default() -> Self {
        CommunityId(Repr::Heap(String::new()))
    }
}

impl From<&str> for CommunityId {
    fn from(s: &str) -> Self {
        match <[u8; LEN]>::try_from(s.as_bytes()) {
            Ok(b) => CommunityId(Repr::Inline(b)),
            Err(_) => CommunityId(Repr::Heap(s.to_owned())),
        }
    }
}

impl From<String> for CommunityId {
    fn from(s: String) -> Self {
        if s.len() == LEN {
            CommunityId::from(s.as_str())
        } else {
            CommunityId(Repr::Heap(s))
        }
    }
}

impl std::ops::Deref for CommunityId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for CommunityId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for CommunityId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for CommunityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CommunityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CommunityId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CommunityId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(CommunityId::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around a community id's, ASCII and not, reads back as it was given, by
    /// either constructor and through serde; only the 30-byte ones are inline.
    #[test]
    fn reads_back_what_it_was_given() {
        for n in [0, 1, 2, 29, 30, 31, 64] {
            for fill in ["a", "é", "\""] {
                let s: String = fill.repeat(n).chars().take(n).collect();
                let a = CommunityId::from(s.as_str());
                let b = CommunityId::from(s.clone());
                assert_eq!(a.as_str(), s);
                assert_eq!(a, b);
                assert_eq!(matches!(a.0, Repr::Inline(_)), s.len() == LEN, "{s:?}");
                let bytes = rmp_serde::to_vec(&a).expect("encodes");
                let back: CommunityId = rmp_serde::from_slice(&bytes).expect("decodes");
                assert_eq!(back, a);
                assert_eq!(format!("{a:?}"), format!("{s:?}"));
            }
        }
    }
}
