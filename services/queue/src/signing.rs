//! The queue signature: HMAC-SHA256 of the exact body bytes under `QUEUE_SIGNING_KEY`, lowercase
//! hex in the AMQP header `x-signature`.
//!
//! Why: the broker is reachable by more than the chat service (guest/guest by default), and the
//! writer stores what it reads. What must not break: the writer checks the signature over the
//! bytes it received *before* it parses anything, with a constant-time comparison
//! (`Mac::verify_slice`), and an unsigned or mis-signed message is never written.

use hmac::{Hmac, KeyInit, Mac};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use sha2::Sha256;

/// The AMQP header holding the hex signature.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// Bytes of an HMAC-SHA256 tag (64 hex characters on the wire).
const TAG_BYTES: usize = 32;

/// Why the writer refuses a delivery before storing it; each is a `writer_dead_letters_total`
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No `x-signature` header.
    Unsigned,
    /// A signature that is not this key's over these bytes (or not 64 hex characters).
    BadSignature,
    /// Signed, but not a storable version-2 message.
    Malformed(String),
}

impl Rejection {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::BadSignature => "bad_signature",
            Rejection::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unsigned => write!(f, "no {SIGNATURE_HEADER} header"),
            Rejection::BadSignature => write!(f, "the {SIGNATURE_HEADER} does not match the body"),
            Rejection::Malformed(why) => f.write_str(why),
        }
    }
}

/// The shared key, ready to sign and verify (the HMAC state is keyed once and cloned per message).
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC takes a key of any length (longer ones are hashed first): this cannot fail.
        Self(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length"))
    }

    /// The lowercase hex signature of `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// What the chat service publishes `body` with: persistent JSON plus its signature.
    pub fn properties(&self, body: &[u8]) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            SIGNATURE_HEADER.into(),
            AMQPValue::LongString(self.sign(body).into()),
        );
        crate::unsigned_properties().with_headers(headers)
    }

    /// `Ok` only when `properties` carry this key's signature of exactly `body`.
    pub fn verify(&self, properties: &BasicProperties, body: &[u8]) -> Result<(), Rejection> {
        let value = properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(SIGNATURE_HEADER))
            .ok_or(Rejection::Unsigned)?;
        let hex_tag: &[u8] = match value {
            AMQPValue::LongString(s) => s.as_bytes(),
            AMQPValue::ShortString(s) => s.as_str().as_bytes(),
            _ => return Err(Rejection::BadSignature),
        };
        let mut tag = [0u8; TAG_BYTES];
        hex::decode_to_slice(hex_tag, &mut tag).map_err(|_| Rejection::BadSignature)?;
        let mut mac = self.0.clone();
        mac.update(body);
        mac.verify_slice(&tag).map_err(|_| Rejection::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"v":2}"#;

    fn key() -> SigningKey {
        SigningKey::new(b"0123456789abcdef0123456789abcdef")
    }

    fn with_header(value: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(SIGNATURE_HEADER.into(), value);
        crate::unsigned_properties().with_headers(headers)
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256_in_lowercase_hex() {
        // RFC 4231 test case 2.
        let key = SigningKey::new(b"Jefe");
        assert_eq!(
            key.sign(b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_this_keys_signature_of_these_bytes_verifies() {
        let key = key();
        assert_eq!(key.verify(&key.properties(BODY), BODY), Ok(()));
        // Upper-case hex is the same tag.
        let upper = key.sign(BODY).to_uppercase();
        assert_eq!(
            key.verify(&with_header(AMQPValue::LongString(upper.into())), BODY),
            Ok(())
        );
        assert_eq!(
            key.verify(&crate::unsigned_properties(), BODY),
            Err(Rejection::Unsigned)
        );
        let other = SigningKey::new(b"another key, also 32 bytes long!");
        assert_eq!(
            key.verify(&other.properties(BODY), BODY),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            key.verify(&key.properties(BODY), br#"{"v":2} "#),
            Err(Rejection::BadSignature),
            "one byte more is another message"
        );
        let signature = key.sign(BODY);
        for bad in [
            AMQPValue::LongString("".into()),
            AMQPValue::LongString(signature[..62].to_string().into()),
            AMQPValue::LongString(format!("{signature}00").into()),
            AMQPValue::LongString(signature.replace(|c: char| c.is_ascii_digit(), "g").into()),
            AMQPValue::Boolean(true),
        ] {
            assert_eq!(
                key.verify(&with_header(bad.clone()), BODY),
                Err(Rejection::BadSignature),
                "{bad:?}"
            );
        }
        assert_eq!(
            key.verify(
                &with_header(AMQPValue::ShortString(signature.as_str().into())),
                BODY
            ),
            Ok(())
        );
    }

    #[test]
    fn the_key_never_prints() {
        assert_eq!(format!("{:?}", key()), "SigningKey(<redacted>)");
    }
}
