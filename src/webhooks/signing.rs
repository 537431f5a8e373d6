//! Standard Webhooks signatures and the endpoint secrets they use.
//!
//! A secret is never stored: Redis keeps a random salt per endpoint, and the secret is
//! HMAC-SHA256(`webhook_signing_key`, endpoint id + salt), recomputed when a message is
//! signed. A dump of Redis therefore holds nothing that signs; the settings' key does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a shown secret (`whsec_` then the base64 of the key bytes), as in Standard
/// Webhooks.
pub(crate) const SECRET_PREFIX: &str = "whsec_";

/// The key bytes of endpoint `id`'s secret.
pub(crate) fn derive_secret(master: &[u8], id: &str, salt: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes keys of any length");
    mac.update(b"geodispatch webhook secret\0");
    mac.update(id.as_bytes());
    mac.update(b"\0");
    mac.update(salt.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The secret as shown to the administrator once: `whsec_<base64>`.
pub(crate) fn secret_text(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` value of one message: `v1,<base64 HMAC-SHA256 of
/// "<id>.<timestamp>.<body>">`.
pub(crate) fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_reference_vector() {
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_depend_on_the_key_the_endpoint_and_the_salt() {
        let a = derive_secret(b"k1", "wh_1", "s");
        assert_eq!(a, derive_secret(b"k1", "wh_1", "s"));
        assert_ne!(a, derive_secret(b"k2", "wh_1", "s"));
        assert_ne!(a, derive_secret(b"k1", "wh_2", "s"));
        assert_ne!(a, derive_secret(b"k1", "wh_1", "t"));
        assert!(secret_text(&a).starts_with("whsec_"));
    }
}
