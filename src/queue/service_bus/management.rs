//! The Service Bus management (ATOM REST) API: a queue's active message count, and creating and
//! deleting queues for development namespaces and tests.
//!
//! AMQP has no call for an entity's message counts, so [`backlog`](super::ServiceBusQueue) reads
//! the queue's description over HTTPS (`GET https://<namespace>/<queue>?api-version=2021-05`)
//! with the same credential the AMQP connection uses: an Entra ID bearer token for
//! `https://servicebus.azure.net/.default`, or a shared access signature made from a connection
//! string's key. Reading descriptions needs the **Manage** right (Azure Service Bus Data Owner);
//! without it the call fails with [`QueueError::Permanent`]. On Azure the workers' identity has no
//! such right: KEDA reads the count with its own identity and scales the workers.
//!
//! The functions here are pure (URLs, tokens, XML); the HTTP calls live in the backend.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use quick_xml::Reader;
use quick_xml::events::Event;
use sha2::Sha256;

use crate::queue::QueueError;

/// The management API version used.
pub const API_VERSION: &str = "2021-05";

/// The scope of an Entra ID token for Service Bus (AMQP and management alike).
pub const TOKEN_SCOPE: &str = "https://servicebus.azure.net/.default";

/// Content type of an ATOM entry sent to the management API.
pub const ATOM_ENTRY: &str = "application/atom+xml;type=entry;charset=utf-8";

/// How long a shared access signature made here is valid.
pub const SAS_VALIDITY: Duration = Duration::from_secs(3600);

/// The management URL of `queue` in `namespace` (a fully qualified host name).
pub fn queue_url(namespace: &str, queue: &str) -> String {
    format!(
        "https://{namespace}/{}?api-version={API_VERSION}",
        percent_encode(queue)
    )
}

/// The `Authorization` header value of a shared access signature for `resource` (a URL), signed
/// with the key `key` of the policy `key_name`, valid until `expiry`.
///
/// The signature is HMAC-SHA256, keyed with the key's bytes as written in the connection string,
/// over the percent-encoded resource, a newline and the expiry in seconds since the Unix epoch.
pub fn shared_access_signature(
    resource: &str,
    key_name: &str,
    key: &str,
    expiry: SystemTime,
) -> Result<String, QueueError> {
    let expiry = expiry
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let encoded = percent_encode(resource);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|e| QueueError::Permanent {
            message: "cannot key the shared access signature".to_owned(),
            source: Some(Box::new(e)),
        })?;
    mac.update(format!("{encoded}\n{expiry}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(format!(
        "SharedAccessSignature sr={encoded}&sig={}&se={expiry}&skn={}",
        percent_encode(&signature),
        percent_encode(key_name)
    ))
}

/// What [`percent_encode`] leaves as it is: the unreserved characters of RFC 3986.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes everything but the unreserved characters of RFC 3986.
pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// Reads the active message count out of a queue description (an ATOM entry).
///
/// Returns `None` when the document has no `ActiveMessageCount` (the management API answers a
/// GET of a missing queue with an empty feed rather than 404), or is not well-formed XML.
pub fn active_message_count(xml: &str) -> Option<u64> {
    element_text(xml, "ActiveMessageCount")?.trim().parse().ok()
}

/// The text of the first element whose local name (any namespace prefix) is `local`.
fn element_text(xml: &str, local: &str) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut inside = false;
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == local.as_bytes() => inside = true,
            Event::Text(t) if inside => text.push_str(&t.decode().ok()?),
            Event::End(_) if inside => return Some(text),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Settings of a queue created through [`queue_description`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a received message stays locked (5 s to 5 min).
    pub lock_duration: Duration,
    /// Deliveries before the broker dead-letters a message.
    pub max_delivery_count: u32,
    /// Delete the queue after it has been idle this long (at least 5 min); `None`: never.
    pub auto_delete_on_idle: Option<Duration>,
}

impl Default for QueueSettings {
    /// The `batches` queue as the infrastructure creates it: 1 min locks, 5 deliveries.
    fn default() -> Self {
        Self {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 5,
            auto_delete_on_idle: None,
        }
    }
}

/// The ATOM entry that creates a queue with `settings`: no duplicate detection (replay re-sends
/// ids; see the module docs of the backend), no sessions, dead-lettering on expiry.
///
/// The management API reads a queue description's elements in schema order; this writes them
/// in that order.
pub fn queue_description(settings: &QueueSettings) -> String {
    let mut description = format!(
        "<LockDuration>{}</LockDuration>\
         <RequiresDuplicateDetection>false</RequiresDuplicateDetection>\
         <RequiresSession>false</RequiresSession>\
         <DeadLetteringOnMessageExpiration>true</DeadLetteringOnMessageExpiration>\
         <MaxDeliveryCount>{}</MaxDeliveryCount>",
        iso_duration(settings.lock_duration),
        settings.max_delivery_count
    );
    if let Some(idle) = settings.auto_delete_on_idle {
        description.push_str(&format!(
            "<AutoDeleteOnIdle>{}</AutoDeleteOnIdle>",
            iso_duration(idle)
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <entry xmlns=\"http://www.w3.org/2005/Atom\">\
         <content type=\"application/xml\">\
         <QueueDescription xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\" \
         xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">{description}</QueueDescription>\
         </content></entry>"
    )
}

/// An ISO 8601 duration in whole seconds (`PT90S`), at least one second.
pub fn iso_duration(duration: Duration) -> String {
    format!("PT{}S", duration.as_secs().max(1))
}
