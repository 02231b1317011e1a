//! Mapping between the queue's messages and Service Bus messages.
//!
//! - An [`OutgoingMessage`] becomes a Service Bus message with `message_id` = its id, the body as
//!   one data section and content type `application/json`; a delay becomes the scheduled enqueue
//!   time (sending schedules it).
//! - A received message becomes a [`Delivery`]: lock token, delivery count, enqueued time and
//!   lock expiry as the broker reports them; from a dead-letter queue also the dead-letter reason
//!   and description the broker keeps in its application properties.
//! - Dead-lettering adds the application property [`DEAD_LETTERED_AT`] (milliseconds since the
//!   Unix epoch), since Service Bus records no time of dead-lettering. Messages the broker
//!   dead-letters itself (`MaxDeliveryCountExceeded`, expiry) lack it; their time is the
//!   enqueued time.
//!
//! The functions here are pure: they sit between our types and the crate's and are tested
//! without a broker.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azservicebus::ServiceBusMessage;
use fe2o3_amqp_types::messaging::{ApplicationProperties, Body};
use fe2o3_amqp_types::primitives::{OrderedMap, SimpleValue, Value};
use time::OffsetDateTime;

use crate::queue::{DeadLetter, DeadLetterInfo, Delivery, OutgoingMessage, QueueError};

/// The content type of every message sent: bodies are JSON in this system.
pub const CONTENT_TYPE: &str = "application/json";

/// Application property set when this backend dead-letters a message: when, in milliseconds
/// since the Unix epoch.
pub const DEAD_LETTERED_AT: &str = "stylefleet-dead-lettered-at";

/// Longest message id Service Bus accepts.
pub const MAX_ID_LEN: usize = 128;

/// Longest dead-letter reason or description sent; longer ones are cut (at a character
/// boundary) so that the broker never refuses a dead-lettering over its header size.
pub const MAX_DEAD_LETTER_TEXT: usize = 4096;

/// Builds the Service Bus message for `message`. The delay is not part of it: the sender
/// schedules delayed messages.
pub fn to_service_bus(message: &OutgoingMessage) -> Result<ServiceBusMessage, QueueError> {
    let mut out = ServiceBusMessage::new(message.body.clone());
    out.set_message_id(message.id.clone())
        .map_err(|source| QueueError::Permanent {
            message: format!(
                "message id {:?} is not a valid Service Bus message id (1 to {MAX_ID_LEN} bytes)",
                message.id
            ),
            source: Some(Box::new(source)),
        })?;
    out.set_content_type(CONTENT_TYPE.to_owned());
    Ok(out)
}

/// When a message sent now with `delay` should appear.
pub fn scheduled_time(now: SystemTime, delay: Duration) -> OffsetDateTime {
    offset_date_time(now + delay)
}

/// What the broker reports about a received or peeked message, read out of the crate's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The message id, if the sender set one.
    pub id: Option<String>,
    /// The broker's sequence number.
    pub sequence: i64,
    /// The body.
    pub body: Vec<u8>,
    /// Deliveries so far, this one included.
    pub delivery_count: u32,
    /// When the broker accepted the message.
    pub enqueued_at: SystemTime,
    /// When the lock expires (received messages).
    pub locked_until: Option<SystemTime>,
    /// The dead-letter reason, if the broker keeps one.
    pub dead_letter_reason: Option<String>,
    /// The dead-letter description, if the broker keeps one.
    pub dead_letter_description: Option<String>,
    /// The [`DEAD_LETTERED_AT`] property, if present.
    pub dead_lettered_at: Option<SystemTime>,
}

impl Received {
    /// The id the queue reports: the message id, or (for a message sent without one by
    /// something else) `sequence:<n>`, so that it can still be settled and listed.
    pub fn id(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("sequence:{}", self.sequence))
    }

    /// Why and when it was dead-lettered.
    pub fn dead_letter_info(&self) -> DeadLetterInfo {
        DeadLetterInfo {
            reason: self.dead_letter_reason.clone().unwrap_or_default(),
            description: self.dead_letter_description.clone().unwrap_or_default(),
            at: self.dead_lettered_at.unwrap_or(self.enqueued_at),
        }
    }

    /// The delivery of a message received under the lock `lock_token` from `queue` (or from its
    /// dead-letter queue when `dead`), whose locks last `lock_duration`. `now` stands in for a
    /// lock expiry the broker did not report.
    pub fn into_delivery(
        self,
        queue: &str,
        lock_token: String,
        dead: bool,
        lock_duration: Duration,
        now: SystemTime,
    ) -> Delivery {
        Delivery {
            queue: queue.to_owned(),
            id: self.id(),
            lock_token,
            dead_letter: dead.then(|| self.dead_letter_info()),
            delivery_count: self.delivery_count,
            enqueued_at: self.enqueued_at,
            locked_until: self.locked_until.unwrap_or(now),
            lock_duration,
            body: self.body,
        }
    }

    /// The listing entry of a message peeked in `queue`'s dead-letter queue.
    pub fn into_dead_letter(self, queue: &str) -> DeadLetter {
        DeadLetter {
            queue: queue.to_owned(),
            sequence: self.sequence,
            id: self.id(),
            info: self.dead_letter_info(),
            delivery_count: self.delivery_count,
            enqueued_at: self.enqueued_at,
            body: self.body,
        }
    }
}

/// The bytes of a body: data sections concatenated, or a string or binary value. Other bodies
/// (sent by something other than this system) read as empty, which the handlers dead-letter as
/// malformed; the broker keeps the original.
pub fn body_bytes(body: &Body<Value>) -> Vec<u8> {
    match body {
        Body::Data(sections) => sections.iter().flat_map(|data| data.0.to_vec()).collect(),
        Body::Value(value) => match &value.0 {
            Value::String(text) => text.clone().into_bytes(),
            Value::Binary(bytes) => bytes.to_vec(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The [`DEAD_LETTERED_AT`] time in `properties`, if present and readable.
pub fn dead_lettered_at(properties: Option<&ApplicationProperties>) -> Option<SystemTime> {
    let value = properties?.get(DEAD_LETTERED_AT)?;
    let millis: i64 = match value {
        SimpleValue::Long(v) => *v,
        SimpleValue::Ulong(v) => i64::try_from(*v).ok()?,
        SimpleValue::Int(v) => i64::from(*v),
        SimpleValue::Uint(v) => i64::from(*v),
        SimpleValue::Timestamp(t) => t.milliseconds(),
        SimpleValue::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let millis = u64::try_from(millis).ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(millis))
}

/// The properties a dead-lettering sets: [`DEAD_LETTERED_AT`] = `now`.
pub fn dead_letter_properties(now: SystemTime) -> OrderedMap<String, Value> {
    let millis = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut properties = OrderedMap::new();
    properties.insert(DEAD_LETTERED_AT.to_owned(), Value::Long(millis));
    properties
}

/// `text` cut to at most [`MAX_DEAD_LETTER_TEXT`] bytes, at a character boundary.
pub fn dead_letter_text(text: &str) -> String {
    if text.len() <= MAX_DEAD_LETTER_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_DEAD_LETTER_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The broker's time as a [`SystemTime`] (times before the epoch read as the epoch).
pub fn system_time(time: OffsetDateTime) -> SystemTime {
    if time < OffsetDateTime::UNIX_EPOCH {
        UNIX_EPOCH
    } else {
        SystemTime::from(time)
    }
}

/// A [`SystemTime`] as the crate's time type.
pub fn offset_date_time(time: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(time)
}

/// The broker property holding a dead-letter reason.
pub const DEAD_LETTER_REASON: &str = "DeadLetterReason";

/// The broker property holding a dead-letter description.
pub const DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";

/// A string application property, if present as a string.
pub fn property_text(properties: Option<&ApplicationProperties>, name: &str) -> Option<String> {
    match properties?.get(name)? {
        SimpleValue::String(text) => Some(text.clone()),
        _ => None,
    }
}

/// A lock token as text: the UUID's 16 bytes in hyphenated lowercase hex (8-4-4-4-12).
pub fn lock_token_text(bytes: &[u8; 16]) -> String {
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push_str(&format!("{byte:02x}"));
    }
    text
}
