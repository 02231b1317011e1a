//! The two message kinds, versioned JSON (`"v": 1`), ids and ranges only, never frame data.
//!
//! A body that does not parse, or carries an unknown version, is [`MessageError`]: the consumer
//! dead-letters it on first sight with the error as the reason, so it can never crash or loop a
//! worker.

use serde::{Deserialize, Serialize};

use crate::job::JobId;
use crate::queue::OutgoingMessage;

/// The message format version this build reads and writes.
pub const VERSION: u32 = 1;

/// One batch of frames to style: `frames` is the half-open range `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchMessage {
    /// Format version, always [`VERSION`] when written.
    pub v: u32,
    /// The job.
    pub job: JobId,
    /// The batch index within the job's plan.
    pub batch: u32,
    /// Frame range `[start, end)` in presentation order.
    pub frames: [u64; 2],
}

/// All batches of a job are done: stitch the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StitchMessage {
    /// Format version.
    pub v: u32,
    /// The job.
    pub job: JobId,
}

/// Why a message body was refused.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, or not the expected shape.
    #[error("malformed message: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A version this build does not speak.
    #[error("unknown message version {found} (this build reads version {VERSION})")]
    UnknownVersion {
        /// The version found in the body.
        found: u64,
    },
    /// Parsed, but the content is impossible (for example an empty frame range).
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl MessageError {
    /// The short dead-letter reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            MessageError::Malformed(_) => "MalformedMessage",
            MessageError::UnknownVersion { .. } => "UnknownMessageVersion",
            MessageError::Invalid(_) => "InvalidMessage",
        }
    }
}

/// Checks the version before the shape, so a future version gets the right reason.
fn check_version(body: &[u8]) -> Result<(), MessageError> {
    #[derive(Deserialize)]
    struct Versioned {
        v: Option<serde_json::Value>,
    }
    let versioned: Versioned = serde_json::from_slice(body).map_err(MessageError::Malformed)?;
    match versioned.v {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => Ok(()),
        Some(serde_json::Value::Number(n)) => Err(MessageError::UnknownVersion {
            found: n.as_u64().unwrap_or(u64::MAX),
        }),
        _ => Err(MessageError::Invalid("missing or non-numeric \"v\"".into())),
    }
}

impl BatchMessage {
    /// A version-1 batch message.
    pub fn new(job: JobId, batch: u32, frames: std::ops::Range<u64>) -> Self {
        Self {
            v: VERSION,
            job,
            batch,
            frames: [frames.start, frames.end],
        }
    }

    /// The message id: `"<job>:<batch>"`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.job, self.batch)
    }

    /// The frame range.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.frames[0]..self.frames[1]
    }

    /// Parses and validates a body.
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        check_version(body)?;
        let message: Self = serde_json::from_slice(body).map_err(MessageError::Malformed)?;
        if message.frames[0] >= message.frames[1] {
            return Err(MessageError::Invalid(format!(
                "empty frame range [{}, {})",
                message.frames[0], message.frames[1]
            )));
        }
        Ok(message)
    }

    /// The message to send.
    pub fn to_outgoing(&self) -> OutgoingMessage {
        OutgoingMessage::new(self.id(), to_json(self))
    }
}

impl StitchMessage {
    /// A version-1 stitch message.
    pub fn new(job: JobId) -> Self {
        Self { v: VERSION, job }
    }

    /// The message id: `"<job>:stitch"`.
    pub fn id(&self) -> String {
        format!("{}:stitch", self.job)
    }

    /// Parses and validates a body.
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        check_version(body)?;
        serde_json::from_slice(body).map_err(MessageError::Malformed)
    }

    /// The message to send.
    pub fn to_outgoing(&self) -> OutgoingMessage {
        OutgoingMessage::new(self.id(), to_json(self))
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and integers always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn job() -> JobId {
        JobId::parse("0123456789abcdef").unwrap()
    }

    #[test]
    fn batch_round_trips_with_its_id() {
        let m = BatchMessage::new(job(), 3, 48..64);
        assert_eq!(m.id(), "0123456789abcdef:3");
        let parsed = BatchMessage::parse(&m.to_outgoing().body).unwrap();
        assert_eq!(parsed, m);
        assert_eq!(parsed.range(), 48..64);
    }

    #[test]
    fn stitch_round_trips_with_its_id() {
        let m = StitchMessage::new(job());
        assert_eq!(m.id(), "0123456789abcdef:stitch");
        assert_eq!(StitchMessage::parse(&m.to_outgoing().body).unwrap(), m);
    }

    #[test]
    fn refusals_carry_their_reason() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "MalformedMessage"),
            (
                b"{\"v\":2,\"job\":\"0123456789abcdef\",\"batch\":0,\"frames\":[0,1]}",
                "UnknownMessageVersion",
            ),
            (
                b"{\"job\":\"0123456789abcdef\",\"batch\":0,\"frames\":[0,1]}",
                "InvalidMessage",
            ),
            (
                b"{\"v\":1,\"job\":\"0123456789abcdef\",\"batch\":0,\"frames\":[5,5]}",
                "InvalidMessage",
            ),
            (
                b"{\"v\":1,\"job\":\"../../etc\",\"batch\":0,\"frames\":[0,1]}",
                "MalformedMessage",
            ),
            (
                b"{\"v\":1,\"job\":\"0123456789abcdef\",\"batch\":0}",
                "MalformedMessage",
            ),
        ];
        for (body, reason) in cases {
            let err = BatchMessage::parse(body).unwrap_err();
            assert_eq!(
                err.reason(),
                reason,
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
