use std::fmt;

use serde::Serialize;

use super::driver_id::check_id;

/// An order's id: 1–64 characters of `[A-Za-z0-9_-]` (the same alphabet as driver ids, safe
/// inside Redis key names, channel names and URLs). Generated as `ord-<32 hex digits>` when the
/// client sends none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct OrderId(String);

impl OrderId {
    /// Accept `value` if it is 1–64 characters of `[A-Za-z0-9_-]`.
    pub fn parse(value: &str) -> Result<Self, String> {
        check_id(value).map(|()| OrderId(value.to_owned()))
    }

    /// A new random id (`ord-` and 128 random bits in hex).
    pub(crate) fn generate() -> Self {
        OrderId(format!("ord-{}", uuid::Uuid::new_v4().simple()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = OrderId::generate();
        let b = OrderId::generate();
        assert_ne!(a, b);
        assert!(OrderId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn rejects_ids_that_would_forge_keys() {
        for bad in ["", "a:b", "{paris}", "a b", &"x".repeat(65)] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
