//! The `aggregator` function: a Service Bus `stitch` message in (the host holds its lock and
//! renews it), the job's output written once.
//!
//! The host settles the message by the answer: a 2xx completes it, anything else abandons it for
//! redelivery, and Service Bus dead-letters it after the queue's max delivery count. So:
//! - done (or already done) -> 200;
//! - a transient failure -> 500 (redelivered);
//! - a permanent failure, or the last allowed attempt of a transient one -> the job is marked
//!   failed with the reason (`jobs/<job>/failed/stitch.json` and `status.json`) and 200, so that
//!   poison ends with a visible reason instead of looping;
//! - a body that is not a stitch message -> 400 with the reason: it is redelivered until Service
//!   Bus dead-letters it, where `stylefleet dlq` shows it.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use stylefleet::job::{Status, paths};
use stylefleet::message::StitchMessage;
use stylefleet::queue::{Delivery, STITCH};
use stylefleet::stage::{Context, Outcome};

use crate::protocol::{Invocation, InvocationResponse, RequestError, kind};

/// The trigger binding's name in `aggregator/function.json`.
pub const BINDING: &str = "message";

/// Why an aggregator invocation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The request or the message is malformed: answered 400.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Stitching failed in a way that may pass: answered 500, so the message is redelivered.
    #[error("job {job}: {reason}")]
    Transient {
        /// The job.
        job: String,
        /// What failed.
        reason: String,
    },
}

/// The message body the trigger delivers: the text of a string payload, or the JSON of an object
/// (the host parses JSON bodies for some bindings).
fn body_of(payload: &Value) -> Result<Vec<u8>, RequestError> {
    match payload {
        Value::String(s) => Ok(s.clone().into_bytes()),
        Value::Object(_) => Ok(payload.to_string().into_bytes()),
        other => Err(RequestError::Payload {
            binding: BINDING.into(),
            reason: format!("expected the message body, got {}", kind(other)),
        }),
    }
}

/// Handles one invocation. `max_delivery_count` is the `stitch` queue's: the attempt that reaches
/// it fails the job instead of asking for another.
pub async fn handle(
    ctx: &Context,
    max_delivery_count: u32,
    body: &[u8],
) -> Result<InvocationResponse, AggregatorError> {
    let invocation = Invocation::parse(body)?;
    let body = body_of(invocation.trigger(BINDING)?)?;
    let message = StitchMessage::parse(&body).map_err(|e| RequestError::Payload {
        binding: BINDING.into(),
        reason: format!("{}: {e}", e.reason()),
    })?;
    let delivery_count = invocation
        .metadata_str("DeliveryCount")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    let id = invocation
        .metadata_str("MessageId")
        .unwrap_or_else(|| message.id());
    let now = SystemTime::now();
    // The host holds the lock; the stage never settles, so the token is never used.
    let delivery = Delivery {
        queue: STITCH.into(),
        id,
        lock_token: String::new(),
        body,
        delivery_count,
        enqueued_at: now,
        locked_until: now + Duration::from_secs(300),
        dead_letter: None,
    };
    let mut ctx = ctx.clone();
    ctx.max_delivery_count = max_delivery_count;
    let outcome = stylefleet::stage::aggregate::handle(&ctx, &delivery).await;
    let job = message.job.as_str().to_owned();
    let mut response = InvocationResponse::default();
    match outcome {
        Outcome::Complete => {
            let output = match ctx
                .store
                .get_json::<Status>(&paths::status(&message.job))
                .await
            {
                Ok(Some(status)) => status.output,
                _ => None,
            };
            response.log(format!(
                "job {job}: stitched (attempt {delivery_count}) -> {}",
                output.as_deref().unwrap_or("?")
            ));
            response.return_value = json!({"job": job, "outcome": "complete", "output": output});
            Ok(response)
        }
        Outcome::Retry { reason, .. } => Err(AggregatorError::Transient { job, reason }),
        Outcome::DeadLetter {
            reason,
            description,
        } => {
            response.log(format!(
                "job {job}: failed for good ({reason}): {description}"
            ));
            response.return_value = json!({
                "job": job,
                "outcome": "failed",
                "reason": reason,
                "description": description,
            });
            Ok(response)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bodies_come_as_text_or_json() {
        assert_eq!(body_of(&json!("{\"v\":1}")).unwrap(), b"{\"v\":1}");
        assert_eq!(body_of(&json!({"v": 1})).unwrap(), b"{\"v\":1}");
        assert!(body_of(&json!(7)).is_err());
        assert!(body_of(&Value::Null).is_err());
    }
}
