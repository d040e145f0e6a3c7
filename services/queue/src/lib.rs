//! The chat service → writer contract, in one place both sides link: the queue's name and
//! topology, the message on it and its version, and the signature that says the chat service
//! wrote it.
//!
//! Both sides declare the topology with exactly these arguments (RabbitMQ refuses a redeclaration
//! with other arguments), so either may start first. Messages are published persistent to a
//! durable queue; one the writer can never store is rejected without requeue and lands, through
//! the queue's dead-letter arguments, in `<queue>.dead`.
//!
//! Wire format (version 2): the body is the JSON of [`QueuedMessage`]
//! (`{"v":2,"id":"<uuid>","chat_id":…,"number":…,"body":…,"created_at":…}`) — or a **batch**, a
//! JSON array of one or more of them (`[{…},{…}]`, what the chat service publishes when several
//! writes wait for the broker at once: one persistent message and one confirm for all of them) —
//! and the AMQP header [`SIGNATURE_HEADER`] (`x-signature`) carries the lowercase hex HMAC-SHA256
//! of the exact body bytes under `QUEUE_SIGNING_KEY` ([`signing`]). A batch is stored or refused
//! whole by the delivery: one bad element makes the whole delivery `malformed`. Writers that
//! read batches must be deployed before chat services that publish them. Anyone who reaches the broker can publish; only
//! the holder of the key can publish something the writer stores. Do not change a field's meaning
//! without a new `v`: messages of the old shape may still be queued.

pub mod commits;
pub mod signing;

use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use common::config::{ConfigError, Lookup};

pub use signing::{Rejection, SIGNATURE_HEADER, SigningKey};

/// The one version of [`QueuedMessage`] this code writes and reads. Version 1 had no `id` and no
/// signature: the writer refuses it (dead-letter, `malformed`).
pub const MESSAGE_VERSION: u32 = 2;

/// Longest message body, in characters (the chat API refuses longer ones with 400; the writer
/// dead-letters them).
pub const MAX_BODY_CHARS: usize = 4096;

/// A message the chat service accepted (202) and the writer must store exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub v: u32,
    /// Made by the chat service when it accepts the message; stored with the row, so a
    /// redelivery (same id) is told apart from another message claiming the same
    /// `(chat_id, number)` (a different id: a conflict).
    pub id: Uuid,
    pub chat_id: i64,
    pub number: i32,
    pub body: String,
    /// When the chat service accepted it: the writer's end-to-end lag starts here.
    pub created_at: DateTime<Utc>,
}

impl QueuedMessage {
    /// A new version-2 message with a fresh id, accepted now.
    pub fn new(chat_id: i64, number: i32, body: String) -> Self {
        Self {
            v: MESSAGE_VERSION,
            id: Uuid::new_v4(),
            chat_id,
            number,
            body,
            created_at: Utc::now(),
        }
    }

    /// Why the writer could never store it (`Err`), beyond the JSON shape: the version, the
    /// numbering, the body limits the chat API enforces.
    pub fn validate(&self) -> Result<(), String> {
        if self.v != MESSAGE_VERSION {
            return Err(other_version(self.v));
        }
        if self.chat_id <= 0 || self.number <= 0 {
            return Err(format!(
                "chat_id {} / number {} must be positive",
                self.chat_id, self.number
            ));
        }
        let chars = self.body.chars().count();
        if !(1..=MAX_BODY_CHARS).contains(&chars) || self.body.contains('\0') {
            return Err(format!("body of {chars} characters is not storable"));
        }
        Ok(())
    }
}

fn other_version(v: u32) -> String {
    format!("message version {v} (this writer reads {MESSAGE_VERSION})")
}

/// Just the version: what a body that is not a [`QueuedMessage`] is read as, so a message of
/// another version (version 1 has no `id`) is named as such.
#[derive(Deserialize)]
struct Versioned {
    v: u32,
}

/// Checks the signature of a delivery, then parses and validates its body: the only way the
/// writer reads a message. Nothing is parsed before the signature checks out.
///
/// A storable body is parsed once (its version is checked by `validate`). Only a body that does
/// not parse as the current shape is read again for its version, so the rejection says why in the
/// order it always has: not JSON / no `v` first, then another version, then the bad field.
pub fn open(
    key: &SigningKey,
    properties: &BasicProperties,
    body: &[u8],
) -> Result<QueuedMessage, Rejection> {
    key.verify(properties, body)?;
    parse(body)
}

/// A single message's JSON, parsed and validated (after its signature was checked).
fn parse(body: &[u8]) -> Result<QueuedMessage, Rejection> {
    let not_queued =
        |e: serde_json::Error| Rejection::Malformed(format!("not a queued message: {e}"));
    let message: QueuedMessage = match serde_json::from_slice(body) {
        Ok(message) => message,
        Err(shape) => {
            let versioned: Versioned = serde_json::from_slice(body).map_err(not_queued)?;
            if versioned.v != MESSAGE_VERSION {
                return Err(Rejection::Malformed(other_version(versioned.v)));
            }
            return Err(not_queued(shape));
        }
    };
    message.validate().map_err(Rejection::Malformed)?;
    Ok(message)
}

/// Every message of a delivery, a single one or a batch ([`batch_body`]): the signature is
/// checked over the whole body first, then each element as [`open`] would.
pub fn open_all(
    key: &SigningKey,
    properties: &BasicProperties,
    body: &[u8],
) -> Result<Vec<QueuedMessage>, Rejection> {
    if body.trim_ascii_start().first() != Some(&b'[') {
        return open(key, properties, body).map(|message| vec![message]);
    }
    key.verify(properties, body)?;
    let elements: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
        .map_err(|e| Rejection::Malformed(format!("not a batch of queued messages: {e}")))?;
    if elements.is_empty() {
        return Err(Rejection::Malformed("an empty batch".into()));
    }
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| {
            parse(element.get().as_bytes()).map_err(|why| match why {
                Rejection::Malformed(why) => {
                    Rejection::Malformed(format!("batch element {index}: {why}"))
                }
                other => other,
            })
        })
        .collect()
}

/// The body of a batch: the JSON array of already-encoded messages (each a [`QueuedMessage`]'s
/// JSON), without decoding them again.
pub fn batch_body<'a>(messages: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + messages.len() * 256);
    body.push(b'[');
    for (index, message) in messages.enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(message);
    }
    body.push(b']');
    body
}

/// `CHAT_QUEUE`: the queue between the chat service and the writer (both read it from here).
pub fn queue_name(env: &Lookup) -> Result<String, ConfigError> {
    let name = env.string("CHAT_QUEUE", "chat.messages");
    let valid = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if valid {
        Ok(name)
    } else {
        Err(ConfigError {
            variable: "CHAT_QUEUE".into(),
            reason: format!("{name:?} must be 1–200 of [A-Za-z0-9._:-]"),
        })
    }
}

/// `QUEUE_SIGNING_KEY` (required, chat and writer the same): at least 32 bytes unless
/// `STORM_DEV=1`.
pub fn signing_key(env: &Lookup) -> Result<SigningKey, ConfigError> {
    env.secret("QUEUE_SIGNING_KEY")
        .map(|secret| SigningKey::new(secret.as_bytes()))
}

/// The dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// Declares `queue` (durable, dead-lettering into `<queue>.dead` through the default exchange) and
/// its dead-letter queue. Idempotent.
pub async fn declare(channel: &Channel, queue: &str) -> lapin::Result<()> {
    let dead = dead_letter_queue(queue);
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(dead.as_str().into(), durable, FieldTable::default())
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.as_str().into()),
    );
    channel
        .queue_declare(queue.into(), durable, arguments)
        .await?;
    Ok(())
}

/// Persistent (delivery mode 2) JSON, unsigned: survives a broker restart once confirmed. What the
/// chat service publishes is [`SigningKey::properties`], these plus the signature.
pub fn unsigned_properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::new(b"0123456789abcdef0123456789abcdef")
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({"v": 2, "id": "6f1c2b9e-8d5a-4c1e-9a57-3c1d2e4f5a6b", "chat_id": 3,
                           "number": 7, "body": "hi", "created_at": "2026-11-27T10:00:00Z"})
    }

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut message = valid();
        message[field] = value;
        message.to_string().into_bytes()
    }

    #[test]
    fn a_signed_well_formed_message_opens() {
        let body = valid().to_string().into_bytes();
        let message = open(&key(), &key().properties(&body), &body).unwrap();
        assert_eq!(
            (message.chat_id, message.number, message.body.as_str()),
            (3, 7, "hi")
        );
        let made = QueuedMessage::new(1, 1, "x".into());
        let body = serde_json::to_vec(&made).unwrap();
        assert_eq!(open(&key(), &key().properties(&body), &body).unwrap(), made);
    }

    #[test]
    fn signed_but_unstorable_messages_are_malformed() {
        let bad = [
            b"not json".to_vec(),
            b"{}".to_vec(),
            with("v", 1.into()),
            with("v", 3.into()),
            with("id", "nope".into()),
            with("id", serde_json::Value::Null),
            with("number", 0.into()),
            with("chat_id", (-1).into()),
            with("body", "".into()),
            with("body", "a\u{0}b".into()),
            with("body", "x".repeat(MAX_BODY_CHARS + 1).into()),
            with("created_at", "yesterday".into()),
        ];
        for body in bad {
            let opened = open(&key(), &key().properties(&body), &body);
            assert!(
                matches!(opened, Err(Rejection::Malformed(_))),
                "{}: {opened:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn a_signed_batch_opens_whole_or_not_at_all() {
        let made: Vec<QueuedMessage> = (1..=3)
            .map(|n| QueuedMessage::new(4, n, format!("m{n}")))
            .collect();
        let encoded: Vec<Vec<u8>> = made
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap())
            .collect();
        let body = batch_body(encoded.iter().map(Vec::as_slice));
        assert_eq!(
            open_all(&key(), &key().properties(&body), &body).unwrap(),
            made
        );
        // A single message is a batch of one.
        let one = &encoded[0];
        assert_eq!(
            open_all(&key(), &key().properties(one), one).unwrap(),
            vec![made[0].clone()]
        );
        // The signature covers the whole array: no element can be added, dropped or changed.
        let unsigned = open_all(&key(), &unsigned_properties(), &body);
        assert_eq!(unsigned, Err(Rejection::Unsigned));
        let shorter = batch_body(encoded[..2].iter().map(Vec::as_slice));
        assert_eq!(
            open_all(&key(), &key().properties(&body), &shorter),
            Err(Rejection::BadSignature)
        );
        // One bad element refuses the delivery, naming it; so does an empty or broken array.
        let bad = with("number", 0.into());
        let mixed = batch_body([encoded[0].as_slice(), bad.as_slice()].into_iter());
        match open_all(&key(), &key().properties(&mixed), &mixed) {
            Err(Rejection::Malformed(why)) => {
                assert!(why.starts_with("batch element 1: "), "{why}")
            }
            other => panic!("{other:?}"),
        }
        for body in [&b"[]"[..], b"[1,", b" [{\"v\":1}]"] {
            let opened = open_all(&key(), &key().properties(body), body);
            assert!(matches!(opened, Err(Rejection::Malformed(_))), "{opened:?}");
        }
    }

    #[test]
    fn version_one_is_refused_by_name() {
        let body = serde_json::json!({"v": 1, "chat_id": 3, "number": 7, "body": "hi",
                                      "created_at": "2026-11-27T10:00:00Z"})
        .to_string()
        .into_bytes();
        let Err(Rejection::Malformed(why)) = open(&key(), &key().properties(&body), &body) else {
            panic!("a version-1 message opened");
        };
        assert!(why.contains("version 1"), "{why}");
    }

    #[test]
    fn a_rejection_names_the_shape_then_the_version_then_the_field() {
        let why = |body: &[u8]| match open(&key(), &key().properties(body), body) {
            Err(Rejection::Malformed(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why(b"{}"),
            "not a queued message: missing field `v` at line 1 column 2"
        );
        assert_eq!(
            why(br#"{"v":3}"#),
            "message version 3 (this writer reads 2)"
        );
        assert!(
            why(&with("id", "nope".into())).starts_with("not a queued message: "),
            "a version-2 message with a bad field names the field"
        );
    }

    #[test]
    fn queue_names_are_validated() {
        assert_eq!(
            queue_name(&Lookup::from_pairs([("CHAT_QUEUE", "a.b-c_d:e")])).unwrap(),
            "a.b-c_d:e"
        );
        for bad in ["", "has space", "ü"] {
            let err = queue_name(&Lookup::from_pairs([("CHAT_QUEUE", bad)])).unwrap_err();
            assert_eq!(err.variable, "CHAT_QUEUE");
        }
    }

    #[test]
    fn the_signing_key_is_required_and_long_outside_development() {
        let none = Lookup::from_pairs::<&str, &str>([]);
        assert_eq!(
            signing_key(&none).unwrap_err().variable,
            "QUEUE_SIGNING_KEY"
        );
        let short = Lookup::from_pairs([("QUEUE_SIGNING_KEY", "short")]);
        assert_eq!(
            signing_key(&short).unwrap_err().variable,
            "QUEUE_SIGNING_KEY"
        );
        let dev = Lookup::from_pairs([("QUEUE_SIGNING_KEY", "short"), ("STORM_DEV", "1")]);
        assert!(signing_key(&dev).is_ok());
        let long = "k".repeat(32);
        assert!(signing_key(&Lookup::from_pairs([("QUEUE_SIGNING_KEY", long.as_str())])).is_ok());
    }
}
