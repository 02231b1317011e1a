//! Classifying Service Bus failures into [`QueueError`]s, where they happen.
//!
//! `azservicebus` hands every failure back as an `azure_core::Error` whose cause is often one of
//! its private types, so the AMQP error condition or management status code cannot always be
//! reached by downcasting. The classification therefore reads the error kind, the typed causes
//! it can reach (`fe2o3-amqp` errors carrying an AMQP condition, management status errors), and
//! finally the rendered error, for the conditions and status codes Service Bus documents:
//!
//! | Service Bus says | condition or status | here |
//! |---|---|---|
//! | message, session lock lost | `com.microsoft:message-lock-lost`, `session-lock-lost`, status 410 | [`QueueError::LockLost`] |
//! | entity not found | `amqp:not-found`, status 404 | [`QueueError::NoSuchQueue`] |
//! | unauthorized | `amqp:unauthorized-access`, status 401, 403, a credential failure | [`QueueError::Permanent`] |
//! | entity disabled, message too large, bad argument, decode failure | | [`QueueError::Permanent`] |
//! | server busy, timeout, connection or link lost, quota exceeded | `com.microsoft:server-busy`, `com.microsoft:timeout`, status 408, 429, 5xx, I/O | [`QueueError::Transient`] |
//!
//! Anything else is transient: a network client that cannot tell is better retried with
//! backoff than left to stop a worker.

use azure_core::error::ErrorKind;
use fe2o3_amqp::link::{DetachError, LinkStateError, ReceiverAttachError, SenderAttachError};
use fe2o3_amqp_types::definitions::{AmqpError, ErrorCondition, LinkError};

use crate::queue::QueueError;

/// What a failure means for the caller, before it is dressed as a [`QueueError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The lock on the message is gone.
    LockLost,
    /// The queue (or its dead-letter queue) does not exist.
    NoSuchQueue,
    /// Retrying may succeed.
    Transient,
    /// Retrying will not succeed.
    Permanent,
}

/// Markers of a lost lock, matched case-insensitively in the rendered error.
const LOCK_LOST: &[&str] = &[
    "message-lock-lost",
    "session-lock-lost",
    "messagelocklost",
    "sessionlocklost",
    "lock supplied is invalid",
    "statuscode(410)",
];

/// Markers of an authorization failure.
const UNAUTHORIZED: &[&str] = &[
    "unauthorized-access",
    "unauthorizedaccess",
    "statuscode(401)",
    "statuscode(403)",
    "saslerror",
    "sasl error",
];

/// Markers of a missing entity.
const NOT_FOUND: &[&str] = &[
    "amqp:not-found",
    "amqperror(notfound)",
    "messagingentitynotfound",
    "could not be found",
    "statuscode(404)",
];

/// Markers of a failure that will not pass by retrying, other than the above.
const FATAL: &[&str] = &[
    "entity-disabled",
    "messagingentitydisabled",
    "message-size-exceeded",
    "messagesizeexceeded",
    "argument error",
    "client is disposed",
    "statuscode(400)",
];

/// Markers of a failure worth retrying.
const TRANSIENT: &[&str] = &[
    "server-busy",
    "serverbusy",
    "com.microsoft:timeout",
    "timed out",
    "elapsed",
    "retry policy exhausted",
    "resource-limit-exceeded",
    "resourcelimitexceeded",
    "quota-exceeded",
    "statuscode(408)",
    "statuscode(429)",
    "statuscode(500)",
    "statuscode(502)",
    "statuscode(503)",
    "statuscode(504)",
];

/// Classifies a failure from `azservicebus` or `azure_core`: by the typed causes it can reach,
/// then by the rendered error, then by the error kind.
pub fn classify(error: &azure_core::Error) -> Class {
    let mut cause = error
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    // A cyclic chain is not expected; the bound keeps one finite all the same.
    for _ in 0..16 {
        let Some(current) = cause else { break };
        if let Some(class) = classify_typed(current) {
            return class;
        }
        cause = current.source();
    }
    let text = render(error);
    let by_text = classify_text(&text);
    if by_text != Class::Transient || contains_any(&text, TRANSIENT) {
        return by_text;
    }
    match error.kind() {
        ErrorKind::Credential => Class::Permanent,
        ErrorKind::DataConversion => Class::Permanent,
        ErrorKind::HttpResponse { status, .. } => classify_status(u16::from(*status)),
        _ => Class::Transient,
    }
}

/// Classifies a cause whose type carries an AMQP condition or a management status.
fn classify_typed(error: &(dyn std::error::Error + 'static)) -> Option<Class> {
    if let Some(error) = error.downcast_ref::<fe2o3_amqp_management::error::Error>() {
        return match error {
            fe2o3_amqp_management::error::Error::Status(status) => {
                Some(classify_status(status.code.0.get()))
            }
            _ => None,
        };
    }
    let remote = if let Some(error) = error.downcast_ref::<ReceiverAttachError>() {
        match error {
            ReceiverAttachError::RemoteClosedWithError(remote) => Some(remote),
            _ => None,
        }
    } else if let Some(error) = error.downcast_ref::<SenderAttachError>() {
        match error {
            SenderAttachError::RemoteClosedWithError(remote) => Some(remote),
            _ => None,
        }
    } else if let Some(error) = error.downcast_ref::<DetachError>() {
        match error {
            DetachError::RemoteDetachedWithError(remote)
            | DetachError::RemoteClosedWithError(remote) => Some(remote),
            _ => None,
        }
    } else if let Some(error) = error.downcast_ref::<LinkStateError>() {
        match error {
            LinkStateError::RemoteDetachedWithError(remote)
            | LinkStateError::RemoteClosedWithError(remote) => Some(remote),
            _ => None,
        }
    } else {
        None
    };
    remote.map(|remote| classify_condition(&remote.condition))
}

/// Classifies an AMQP error condition, standard or Service Bus's own (`com.microsoft:...`).
pub fn classify_condition(condition: &ErrorCondition) -> Class {
    match condition {
        ErrorCondition::AmqpError(error) => match error {
            AmqpError::NotFound => Class::NoSuchQueue,
            AmqpError::UnauthorizedAccess
            | AmqpError::DecodeError
            | AmqpError::NotAllowed
            | AmqpError::InvalidField
            | AmqpError::NotImplemented
            | AmqpError::PreconditionFailed
            | AmqpError::ResourceDeleted => Class::Permanent,
            _ => Class::Transient,
        },
        ErrorCondition::LinkError(LinkError::MessageSizeExceeded) => Class::Permanent,
        ErrorCondition::Custom(symbol) => classify_text(&symbol.0),
        // Connection, session and other link conditions: the link or connection went away.
        _ => Class::Transient,
    }
}

/// Classifies an HTTP status of the Service Bus management (REST) API.
pub fn classify_status(status: u16) -> Class {
    match status {
        401 | 403 => Class::Permanent,
        404 => Class::NoSuchQueue,
        408 | 429 => Class::Transient,
        410 => Class::LockLost,
        500..=599 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Classifies the rendered text of a failure (its `Debug` and `Display` forms, causes included).
/// Text with no known marker is [`Class::Transient`].
pub fn classify_text(text: &str) -> Class {
    let text = text.to_ascii_lowercase();
    if contains_any(&text, LOCK_LOST) {
        Class::LockLost
    } else if contains_any(&text, UNAUTHORIZED) {
        Class::Permanent
    } else if contains_any(&text, NOT_FOUND) {
        Class::NoSuchQueue
    } else if contains_any(&text, FATAL) {
        Class::Permanent
    } else {
        Class::Transient
    }
}

/// Builds the [`QueueError`] for a failure of `what` on `queue` (for messages: `id`).
pub fn to_queue_error(
    class: Class,
    what: &str,
    queue: &str,
    id: Option<&str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> QueueError {
    let message = format!("service bus: {what} on {queue}");
    match class {
        Class::LockLost => match id {
            Some(id) => QueueError::LockLost { id: id.to_owned() },
            // A lost lock outside settling (a receive) says the link is in trouble.
            None => QueueError::Transient { message, source },
        },
        Class::NoSuchQueue => QueueError::NoSuchQueue(queue.to_owned()),
        Class::Transient => QueueError::Transient { message, source },
        Class::Permanent => QueueError::Permanent { message, source },
    }
}

/// Classifies `error` and builds the [`QueueError`] for a failure of `what` on `queue`.
pub fn queue_error(
    error: azure_core::Error,
    what: &str,
    queue: &str,
    id: Option<&str>,
) -> QueueError {
    let class = classify(&error);
    to_queue_error(class, what, queue, id, Some(Box::new(error)))
}

/// The error and its causes, in `Debug` and `Display` form, lower-cased.
fn render(error: &azure_core::Error) -> String {
    let mut text = format!("{error:?}\n{error}");
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    // Causes repeat what Debug showed in most cases; the bound keeps a cyclic chain finite.
    for _ in 0..16 {
        let Some(current) = cause else { break };
        text.push('\n');
        text.push_str(&format!("{current:?}\n{current}"));
        cause = current.source();
    }
    text.to_ascii_lowercase()
}

fn contains_any(text: &str, markers: &[&str]) -> bool {
    markers.iter().any(|marker| text.contains(marker))
}
