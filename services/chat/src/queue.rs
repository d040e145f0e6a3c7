//! The chat service → writer contract: the queue topology and the message format on it.
//!
//! Both sides declare the topology with exactly these arguments (RabbitMQ refuses a redeclaration
//! with other arguments), so either may start first. Messages are published persistent to a
//! durable queue; one the writer can never store is rejected without requeue and lands, through
//! the queue's dead-letter arguments, in `<queue>.dead`. Do not change a field's meaning without a
//! new `v`: messages of the old shape may still be queued.

use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};

/// The one version of [`QueuedMessage`] this code writes and reads.
pub const MESSAGE_VERSION: u32 = 1;

/// A message the chat service accepted (202) and the writer must store exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub v: u32,
    pub chat_id: i64,
    pub number: i32,
    pub body: String,
    /// When the chat service accepted it: the writer's end-to-end lag starts here.
    pub created_at: DateTime<Utc>,
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

/// Persistent (delivery mode 2) JSON: survives a broker restart once confirmed.
pub fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
}
