use std::fmt;

use serde::Serialize;

/// A service area's id, e.g. `paris`: 1–32 characters of `[a-z0-9_-]`.
///
/// It becomes the Redis Cluster hash tag `{city}` of every key of that city, so the alphabet
/// excludes braces and anything else that would change the tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CityId(String);

impl CityId {
    /// Accept `value` if it is 1–32 characters of `[a-z0-9_-]`.
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > 32 {
            return Err("must be 1 to 32 characters long".to_owned());
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err("may contain only a-z, 0-9, '_' and '-'".to_owned());
        }
        Ok(CityId(value.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn city_ids_are_safe_hash_tags() {
        assert!(CityId::parse("paris").is_ok());
        assert!(CityId::parse("new-york_2").is_ok());
        for bad in ["", "Paris", "{paris}", "a:b", &"x".repeat(33)] {
            assert!(CityId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
