//! Time on the wire: `recorded_at` as RFC 3339 text or epoch milliseconds, and epoch
//! milliseconds formatted back as RFC 3339.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// A moment given by a client (when a position was recorded, when an order is ready): RFC 3339
/// text or epoch milliseconds. Written back as epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, example = "2026-11-23T18:30:00.250Z")]
pub(crate) struct RecordedAt(pub(crate) i64);

impl serde::Serialize for RecordedAt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

/// Earliest accepted `recorded_at` (2000-01-01): anything before is a device clock error.
pub(crate) const MIN_RECORDED_MS: i64 = 946_684_800_000;

impl<'de> Deserialize<'de> for RecordedAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RecordedAt;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 timestamp or integer epoch milliseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RecordedAt, E> {
                Ok(RecordedAt(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RecordedAt, E> {
                i64::try_from(v)
                    .map(RecordedAt)
                    .map_err(|_| E::custom("epoch milliseconds out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RecordedAt, E> {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    Ok(RecordedAt(v as i64))
                } else {
                    Err(E::custom("epoch milliseconds must be an integer"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RecordedAt, E> {
                let t = OffsetDateTime::parse(v, &Rfc3339)
                    .map_err(|e| E::custom(format!("not an RFC 3339 timestamp ({e})")))?;
                Ok(RecordedAt((t.unix_timestamp_nanos() / 1_000_000) as i64))
            }
        }
        d.deserialize_any(V)
    }
}

/// Format epoch milliseconds as RFC 3339 (UTC, millisecond precision).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}
