use std::fmt;

use serde::Serialize;

/// The id alphabet as the OpenAPI `pattern` of every driver and order id (the schema
/// annotations repeat it as a literal, which utoipa requires; a test checks they agree).
#[cfg(test)]
pub(crate) const ID_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// Check the id alphabet shared by driver and order ids: 1–64 characters of `[A-Za-z0-9_-]`.
pub(crate) fn check_id(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 64 {
        return Err("must be 1 to 64 characters long".to_owned());
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may contain only A-Z, a-z, 0-9, '_' and '-'".to_owned());
    }
    Ok(())
}

/// A driver's id: 1–64 characters of `[A-Za-z0-9_-]`.
///
/// The character set keeps ids safe inside Redis key names and channel names, and in URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub(crate) struct DriverId(String);

impl DriverId {
    /// Accept `value` if it is 1–64 characters of `[A-Za-z0-9_-]`.
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        check_id(value).map(|()| DriverId(value.to_owned()))
    }

    /// The id as a string.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DriverId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_and_lengths() {
        for ok in ["a", "drv-0001", "Driver_42", &"x".repeat(64)] {
            assert!(DriverId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for (bad, why) in [
            ("", "empty"),
            (&"x".repeat(65) as &str, "too long"),
            ("a b", "space"),
            ("a:b", "colon would forge a key segment"),
            ("{paris}", "braces would change the cluster hash tag"),
            ("é", "non-ASCII"),
            ("a/b", "slash"),
        ] {
            assert!(
                DriverId::parse(bad).is_err(),
                "{bad:?} must be rejected: {why}"
            );
        }
    }
}
