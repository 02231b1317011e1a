//! The Service Bus queue backend.
//!
//! Always: the mapping between our messages and Service Bus messages, the classification of
//! Service Bus failures, and the management API's pure parts (URLs, shared access signatures,
//! queue descriptions), on the crates' own types, built directly.
//!
//! With a broker: the shared conformance suite, each function on a queue of its own that the test
//! creates (5 s locks, 3 deliveries, no duplicate detection, deleted after five idle minutes) and
//! deletes. Set `STYLEFLEET_TEST_SERVICEBUS` to a namespace (`<name>.servicebus.windows.net`, used
//! with the Azure CLI login or a managed identity) or to a connection string with the Manage
//! right. No Service Bus broker can run on a development machine or in CI, so without it each
//! live test prints that it was skipped and passes.
#![cfg(feature = "service-bus")]
#![allow(clippy::unwrap_used)]

use std::num::NonZeroU16;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::error::ErrorKind;
use fe2o3_amqp::link::{DetachError, ReceiverAttachError, SenderAttachError};
use fe2o3_amqp_management::error::{Error as ManagementError, StatusError};
use fe2o3_amqp_management::status::StatusCode;
use fe2o3_amqp_types::definitions::{
    AmqpError, ConnectionError, Error as AmqpErrorBody, ErrorCondition, LinkError,
};
use fe2o3_amqp_types::messaging::{AmqpValue, ApplicationProperties, Body, Data};
use fe2o3_amqp_types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use stylefleet::queue::conformance::{self, Capabilities, Fixture};
use stylefleet::queue::service_bus::error::{
    Class, classify, classify_condition, classify_status, classify_text, queue_error,
};
use stylefleet::queue::service_bus::management::{
    self, QueueSettings, active_message_count, iso_duration, percent_encode, queue_description,
    queue_url, shared_access_signature,
};
use stylefleet::queue::service_bus::message::{
    self, CONTENT_TYPE, DEAD_LETTERED_AT, MAX_DEAD_LETTER_TEXT, Received, body_bytes,
    dead_letter_properties, dead_letter_text, dead_lettered_at, lock_token_text, property_text,
    to_service_bus,
};
use stylefleet::queue::service_bus::{
    Credential, DEPLOYED_LOCK_DURATIONS, FALLBACK_LOCK_DURATION, ServiceBusQueue,
    connection_string_namespace, namespace_of,
};
use stylefleet::queue::{self as queues, OutgoingMessage, QueueError, sqlite::QueueConfig};

// ---------------------------------------------------------------------------------------------
// Message mapping
// ---------------------------------------------------------------------------------------------

#[test]
fn outgoing_message_maps_id_body_and_content_type() {
    let outgoing = OutgoingMessage::new("job-7f3a:00012", br#"{"v":1,"job":"job-7f3a"}"#.to_vec());
    let mapped = to_service_bus(&outgoing).unwrap();
    assert_eq!(mapped.message_id().as_deref(), Some("job-7f3a:00012"));
    assert_eq!(mapped.body(), br#"{"v":1,"job":"job-7f3a"}"#);
    assert_eq!(mapped.content_type(), Some(CONTENT_TYPE));
    assert_eq!(CONTENT_TYPE, "application/json");
}

#[test]
fn message_ids_service_bus_refuses_are_permanent_before_sending() {
    let longest = "x".repeat(message::MAX_ID_LEN);
    assert!(to_service_bus(&OutgoingMessage::new(longest, b"{}".to_vec())).is_ok());
    for bad in [String::new(), "x".repeat(message::MAX_ID_LEN + 1)] {
        match to_service_bus(&OutgoingMessage::new(bad.clone(), b"{}".to_vec())) {
            Err(QueueError::Permanent { message, source }) => {
                assert!(message.contains("message id"), "{message}");
                assert!(source.is_some(), "the crate's error is kept as the source");
            }
            other => panic!("id of {} bytes gave {other:?}", bad.len()),
        }
    }
}

#[test]
fn a_delay_becomes_the_scheduled_enqueue_time() {
    let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
    let at = message::scheduled_time(now, Duration::from_secs(90));
    assert_eq!(at.unix_timestamp(), 1_700_000_090);
    assert_eq!(at.millisecond(), 250);
}

/// The lock duration of the deliveries the mapping tests make.
const LOCK_1M: Duration = Duration::from_secs(60);

fn received() -> Received {
    Received {
        id: Some("job:00003".into()),
        sequence: 42,
        body: b"{\"v\":1}".to_vec(),
        delivery_count: 2,
        enqueued_at: UNIX_EPOCH + Duration::from_secs(1_000),
        locked_until: Some(UNIX_EPOCH + Duration::from_secs(1_060)),
        dead_letter_reason: None,
        dead_letter_description: None,
        dead_lettered_at: None,
    }
}

#[test]
fn a_received_message_maps_to_a_delivery() {
    let now = UNIX_EPOCH + Duration::from_secs(1_001);
    let delivery = received().into_delivery("batches", "token-1".into(), false, LOCK_1M, now);
    assert_eq!(delivery.queue, "batches");
    assert_eq!(delivery.id, "job:00003");
    assert_eq!(delivery.lock_token, "token-1");
    assert_eq!(delivery.body, b"{\"v\":1}");
    assert_eq!(delivery.delivery_count, 2);
    assert_eq!(delivery.lock_duration, LOCK_1M);
    assert_eq!(
        delivery.enqueued_at,
        UNIX_EPOCH + Duration::from_secs(1_000)
    );
    assert_eq!(
        delivery.locked_until,
        UNIX_EPOCH + Duration::from_secs(1_060)
    );
    assert!(
        delivery.dead_letter.is_none(),
        "a live delivery has no dead-letter info"
    );

    // No lock expiry reported: the receive time stands in.
    let delivery = Received {
        locked_until: None,
        ..received()
    }
    .into_delivery("batches", "t".into(), false, LOCK_1M, now);
    assert_eq!(delivery.locked_until, now);
}

#[test]
fn a_message_without_an_id_is_named_by_its_sequence_number() {
    let delivery = Received {
        id: None,
        ..received()
    }
    .into_delivery("stitch", "t".into(), false, LOCK_1M, SystemTime::now());
    assert_eq!(delivery.id, "sequence:42");
}

#[test]
fn dead_letter_deliveries_and_listings_carry_the_reason() {
    let at = UNIX_EPOCH + Duration::from_secs(2_000);
    let dead = Received {
        dead_letter_reason: Some("StyleFailed".into()),
        dead_letter_description: Some("the model rejected the frames".into()),
        dead_lettered_at: Some(at),
        ..received()
    };
    let delivery =
        dead.clone()
            .into_delivery("batches", "t".into(), true, LOCK_1M, SystemTime::now());
    let info = delivery.dead_letter.unwrap();
    assert_eq!(info.reason, "StyleFailed");
    assert_eq!(info.description, "the model rejected the frames");
    assert_eq!(info.at, at);

    let listed = dead.into_dead_letter("batches");
    assert_eq!(listed.queue, "batches");
    assert_eq!(listed.sequence, 42);
    assert_eq!(listed.id, "job:00003");
    assert_eq!(listed.delivery_count, 2);
    assert_eq!(listed.info.reason, "StyleFailed");

    // Dead-lettered by the broker itself: no time property, so the enqueued time stands in.
    let by_broker = Received {
        dead_letter_reason: Some(queues::MAX_DELIVERY_COUNT_EXCEEDED.into()),
        ..received()
    }
    .into_dead_letter("batches");
    assert_eq!(by_broker.info.at, UNIX_EPOCH + Duration::from_secs(1_000));
    assert_eq!(by_broker.info.description, "");
}

#[test]
fn the_dead_letter_time_property_round_trips() {
    let now = UNIX_EPOCH + Duration::from_millis(1_700_000_123_456);
    let written = dead_letter_properties(now);
    let value = written.get(DEAD_LETTERED_AT).unwrap();
    assert_eq!(value, &Value::Long(1_700_000_123_456));

    // The broker hands it back as an application property.
    let mut properties = ApplicationProperties::default();
    properties.insert(
        DEAD_LETTERED_AT.to_owned(),
        SimpleValue::try_from(value.clone()).unwrap(),
    );
    assert_eq!(dead_lettered_at(Some(&properties)), Some(now));
}

#[test]
fn the_dead_letter_time_is_read_from_any_reasonable_encoding() {
    let at = |value: SimpleValue| {
        let mut properties = ApplicationProperties::default();
        properties.insert(DEAD_LETTERED_AT.to_owned(), value);
        dead_lettered_at(Some(&properties))
    };
    let expected = Some(UNIX_EPOCH + Duration::from_millis(5_000));
    assert_eq!(at(SimpleValue::Long(5_000)), expected);
    assert_eq!(at(SimpleValue::Ulong(5_000)), expected);
    assert_eq!(
        at(SimpleValue::Timestamp(Timestamp::from_milliseconds(5_000))),
        expected
    );
    assert_eq!(at(SimpleValue::String("5000".into())), expected);
    assert_eq!(at(SimpleValue::Long(-1)), None, "before the epoch");
    assert_eq!(at(SimpleValue::Bool(true)), None);
    assert_eq!(at(SimpleValue::String("yesterday".into())), None);
    assert_eq!(dead_lettered_at(None), None);
    assert_eq!(
        dead_lettered_at(Some(&ApplicationProperties::default())),
        None
    );
}

#[test]
fn broker_properties_are_read_only_as_strings() {
    let mut properties = ApplicationProperties::default();
    properties.insert(
        message::DEAD_LETTER_REASON.to_owned(),
        SimpleValue::String("MaxDeliveryCountExceeded".into()),
    );
    properties.insert(
        message::DEAD_LETTER_DESCRIPTION.to_owned(),
        SimpleValue::Int(7),
    );
    assert_eq!(
        property_text(Some(&properties), message::DEAD_LETTER_REASON).as_deref(),
        Some("MaxDeliveryCountExceeded")
    );
    assert_eq!(
        property_text(Some(&properties), message::DEAD_LETTER_DESCRIPTION),
        None,
        "a property of another type (set by some other sender) is ignored, not a panic"
    );
    assert_eq!(property_text(None, message::DEAD_LETTER_REASON), None);
}

#[test]
fn dead_letter_texts_are_cut_at_a_character_boundary() {
    assert_eq!(dead_letter_text("short"), "short");
    let long = "é".repeat(MAX_DEAD_LETTER_TEXT); // two bytes each
    let cut = dead_letter_text(&long);
    assert!(cut.len() <= MAX_DEAD_LETTER_TEXT);
    assert_eq!(cut.len(), MAX_DEAD_LETTER_TEXT, "an even cut fits exactly");
    let odd = format!("a{long}");
    let cut = dead_letter_text(&odd);
    assert_eq!(
        cut.len(),
        MAX_DEAD_LETTER_TEXT - 1,
        "backs off to the boundary"
    );
    assert!(cut.starts_with('a') && cut.ends_with('é'));
}

#[test]
fn bodies_are_read_from_data_sections_or_a_string_value() {
    let two_sections = Body::Data(
        vec![
            Data(Binary::from(b"{\"v\":".to_vec())),
            Data(Binary::from(b"1}".to_vec())),
        ]
        .into(),
    );
    assert_eq!(body_bytes(&two_sections), b"{\"v\":1}");
    let text = Body::Value(AmqpValue(Value::String("{\"v\":1}".into())));
    assert_eq!(body_bytes(&text), b"{\"v\":1}");
    let binary = Body::Value(AmqpValue(Value::Binary(Binary::from(b"raw".to_vec()))));
    assert_eq!(body_bytes(&binary), b"raw");
    let number: Body<Value> = Body::Value(AmqpValue(Value::Long(3)));
    assert!(
        body_bytes(&number).is_empty(),
        "handlers dead-letter it as malformed"
    );
    assert!(body_bytes(&Body::<Value>::Empty).is_empty());
}

#[test]
fn lock_tokens_print_as_hyphenated_uuids() {
    let bytes: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];
    assert_eq!(
        lock_token_text(&bytes),
        "12345678-9abc-def0-0123-456789abcdef"
    );
}

#[test]
fn broker_times_before_the_epoch_clamp_to_it() {
    let before = time::OffsetDateTime::UNIX_EPOCH - time::Duration::seconds(5);
    assert_eq!(message::system_time(before), UNIX_EPOCH);
    let after = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(1_500);
    assert_eq!(
        message::system_time(after),
        UNIX_EPOCH + Duration::from_millis(1_500)
    );
}

// ---------------------------------------------------------------------------------------------
// Specs and credentials
// ---------------------------------------------------------------------------------------------

#[test]
fn queue_specs_name_a_namespace() {
    assert_eq!(
        namespace_of("servicebus://Fleet-Prod.servicebus.windows.net").as_deref(),
        Some("fleet-prod.servicebus.windows.net")
    );
    assert_eq!(
        namespace_of("sb://fleet.servicebus.windows.net/").as_deref(),
        Some("fleet.servicebus.windows.net")
    );
    assert_eq!(
        namespace_of("servicebus://fleet").as_deref(),
        Some("fleet.servicebus.windows.net"),
        "a bare name is in the public cloud"
    );
    assert_eq!(
        namespace_of("sb://fleet.servicebus.chinacloudapi.cn").as_deref(),
        Some("fleet.servicebus.chinacloudapi.cn")
    );
    assert_eq!(namespace_of("servicebus://"), None);
    assert_eq!(namespace_of("sb://ns.servicebus.windows.net/batches"), None);
    assert_eq!(namespace_of("stylefleet-data/queue.sqlite"), None);
}

const CONNECTION_STRING: &str = "Endpoint=sb://example-ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHM=";

#[test]
fn connection_strings_name_their_namespace() {
    assert_eq!(
        connection_string_namespace(CONNECTION_STRING).unwrap(),
        "example-ns.servicebus.windows.net"
    );
    assert!(matches!(
        connection_string_namespace("not a connection string"),
        Err(QueueError::Permanent { .. })
    ));
    let queue = ServiceBusQueue::from_connection_string(CONNECTION_STRING).unwrap();
    assert_eq!(queue.namespace(), "example-ns.servicebus.windows.net");
    let shown = format!("{queue:?}");
    assert!(
        !shown.contains("c2VjcmV0"),
        "Debug never shows the key: {shown}"
    );
    assert!(shown.contains("ConnectionString(..)"), "{shown}");
}

#[test]
fn open_routes_service_bus_specs_and_refuses_bad_ones() {
    let config = QueueConfig::default();
    match queues::open("servicebus://", config.clone()) {
        Err(QueueError::Permanent { message, .. }) => assert!(message.contains("servicebus://")),
        other => panic!("an empty namespace gave {other:?}"),
    }
    // Opening connects lazily, so it works offline; which credential it picks depends on the
    // environment, so only check it when no development connection string is set.
    if std::env::var_os("SERVICEBUS_CONNECTION_STRING").is_none() {
        let queue = queues::open("sb://fleet.servicebus.windows.net", config).unwrap();
        let shown = format!("{queue:?}");
        assert!(shown.contains("ServiceBusQueue"), "{shown}");
        assert!(shown.contains("fleet.servicebus.windows.net"), "{shown}");
    }
}

// ---------------------------------------------------------------------------------------------
// Error classification
// ---------------------------------------------------------------------------------------------

fn status(code: u16, description: &str) -> ManagementError {
    ManagementError::Status(StatusError {
        code: StatusCode(NonZeroU16::new(code).unwrap()),
        description: Some(description.into()),
    })
}

fn remote(condition: ErrorCondition, description: &str) -> AmqpErrorBody {
    AmqpErrorBody::new(condition, Some(description.into()), None)
}

fn microsoft(condition: &str) -> ErrorCondition {
    ErrorCondition::Custom(Symbol::from(condition))
}

#[test]
fn management_statuses_classify() {
    let lock_lost = azure_core::Error::new(
        ErrorKind::Other,
        status(
            410,
            "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
        ),
    );
    assert_eq!(classify(&lock_lost), Class::LockLost);
    let unauthorized = azure_core::Error::new(
        ErrorKind::Other,
        status(401, "Unauthorized access. 'Listen' claim(s) are required"),
    );
    assert_eq!(classify(&unauthorized), Class::Permanent);
    let busy = azure_core::Error::new(ErrorKind::Other, status(503, "server busy"));
    assert_eq!(classify(&busy), Class::Transient);
    let missing = azure_core::Error::new(ErrorKind::Other, status(404, "entity not found"));
    assert_eq!(classify(&missing), Class::NoSuchQueue);
}

#[test]
fn link_conditions_classify() {
    let not_found = azure_core::Error::new(
        ErrorKind::Io,
        ReceiverAttachError::RemoteClosedWithError(remote(
            ErrorCondition::AmqpError(AmqpError::NotFound),
            "The messaging entity 'sb://ns.servicebus.windows.net/batchez' could not be found.",
        )),
    );
    assert_eq!(classify(&not_found), Class::NoSuchQueue);
    let unauthorized = azure_core::Error::new(
        ErrorKind::Io,
        SenderAttachError::RemoteClosedWithError(remote(
            ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess),
            "Unauthorized access. 'Send' claim(s) are required to perform this operation.",
        )),
    );
    assert_eq!(classify(&unauthorized), Class::Permanent);
    let lock_lost = azure_core::Error::new(
        ErrorKind::Io,
        DetachError::RemoteDetachedWithError(remote(
            microsoft("com.microsoft:message-lock-lost"),
            "lock lost",
        )),
    );
    assert_eq!(classify(&lock_lost), Class::LockLost);
    let detached = azure_core::Error::new(
        ErrorKind::Io,
        DetachError::RemoteDetachedWithError(remote(
            ErrorCondition::LinkError(LinkError::DetachForced),
            "idle link",
        )),
    );
    assert_eq!(classify(&detached), Class::Transient);
}

#[test]
fn conditions_classify() {
    assert_eq!(
        classify_condition(&microsoft("com.microsoft:session-lock-lost")),
        Class::LockLost
    );
    assert_eq!(
        classify_condition(&microsoft("com.microsoft:server-busy")),
        Class::Transient
    );
    assert_eq!(
        classify_condition(&microsoft("com.microsoft:timeout")),
        Class::Transient
    );
    assert_eq!(
        classify_condition(&microsoft("com.microsoft:entity-disabled")),
        Class::Permanent
    );
    assert_eq!(
        classify_condition(&ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded)),
        Class::Transient
    );
    assert_eq!(
        classify_condition(&ErrorCondition::LinkError(LinkError::MessageSizeExceeded)),
        Class::Permanent
    );
    assert_eq!(
        classify_condition(&ErrorCondition::ConnectionError(
            ConnectionError::ConnectionForced
        )),
        Class::Transient
    );
}

/// An error whose type this code cannot reach, like the crate's private wrappers: only its
/// rendering tells what happened.
#[derive(Debug)]
struct Opaque(String);

impl std::fmt::Display for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Opaque {}

fn opaque(kind: ErrorKind, text: &str) -> azure_core::Error {
    azure_core::Error::new(kind, Opaque(text.into()))
}

#[test]
fn wrapped_failures_classify_by_their_rendering() {
    // How the crate renders a lost lock from a renewal: its retry wrapper around the management
    // status.
    let renewal = opaque(
        ErrorKind::Other,
        "Operation(RequestResponse(Status(StatusError { code: StatusCode(410), description: Some(\"The lock supplied is invalid.\") })))",
    );
    assert_eq!(classify(&renewal), Class::LockLost);
    assert_eq!(
        classify(&opaque(ErrorKind::Other, "Retry policy exhausted")),
        Class::Transient
    );
    assert_eq!(
        classify(&opaque(ErrorKind::Other, "Client is disposed")),
        Class::Permanent
    );
    assert_eq!(
        classify(&opaque(
            ErrorKind::Io,
            "RemoteClosedWithError(Error { condition: AmqpError(NotFound), description: Some(\"The messaging entity could not be found\") })"
        )),
        Class::NoSuchQueue
    );
    // Kinds decide what the text does not.
    assert_eq!(
        classify(&opaque(ErrorKind::Io, "connection reset")),
        Class::Transient
    );
    assert_eq!(
        classify(&opaque(
            ErrorKind::Credential,
            "no managed identity endpoint"
        )),
        Class::Permanent
    );
    assert_eq!(
        classify(&opaque(ErrorKind::DataConversion, "bad frame")),
        Class::Permanent
    );
    assert_eq!(
        classify(&opaque(ErrorKind::Other, "something new")),
        Class::Transient,
        "unknown failures are retried"
    );
    assert_eq!(
        classify(&azure_core::Error::new(
            ErrorKind::Io,
            std::io::Error::from(std::io::ErrorKind::ConnectionReset)
        )),
        Class::Transient
    );
    assert_eq!(
        classify(&azure_core::Error::message(
            ErrorKind::http_response(azure_core::http::StatusCode::Forbidden, None),
            "forbidden"
        )),
        Class::Permanent
    );
}

#[test]
fn text_markers_classify_in_order() {
    assert_eq!(
        classify_text("com.microsoft:message-lock-lost"),
        Class::LockLost
    );
    assert_eq!(classify_text("MessageLockLostException"), Class::LockLost);
    assert_eq!(classify_text("amqp:unauthorized-access"), Class::Permanent);
    assert_eq!(classify_text("amqp:not-found"), Class::NoSuchQueue);
    assert_eq!(classify_text("com.microsoft:server-busy"), Class::Transient);
    assert_eq!(classify_text("anything else"), Class::Transient);
    // A lost lock wins over the words around it.
    assert_eq!(
        classify_text("StatusCode(410) ... could not be found"),
        Class::LockLost
    );
}

#[test]
fn http_statuses_classify() {
    assert_eq!(classify_status(401), Class::Permanent);
    assert_eq!(classify_status(403), Class::Permanent);
    assert_eq!(classify_status(404), Class::NoSuchQueue);
    assert_eq!(classify_status(410), Class::LockLost);
    assert_eq!(classify_status(429), Class::Transient);
    assert_eq!(classify_status(503), Class::Transient);
    assert_eq!(classify_status(400), Class::Permanent);
}

#[test]
fn queue_errors_name_the_message_or_the_queue() {
    let lost = azure_core::Error::new(ErrorKind::Other, status(410, "lock lost"));
    match queue_error(lost, "complete", "batches", Some("job:00001")) {
        QueueError::LockLost { id } => assert_eq!(id, "job:00001"),
        other => panic!("{other:?}"),
    }
    // A lost lock outside settling is the link's trouble: worth retrying.
    let lost = azure_core::Error::new(ErrorKind::Other, status(410, "lock lost"));
    assert!(queue_error(lost, "receive", "batches", None).is_transient());
    let missing = azure_core::Error::new(ErrorKind::Other, status(404, "not found"));
    match queue_error(missing, "attach a receiver", "batchez", None) {
        QueueError::NoSuchQueue(queue) => assert_eq!(queue, "batchez"),
        other => panic!("{other:?}"),
    }
    let busy = azure_core::Error::new(ErrorKind::Other, status(503, "busy"));
    match queue_error(busy, "send", "batches", None) {
        QueueError::Transient { message, source } => {
            assert!(
                message.contains("send") && message.contains("batches"),
                "{message}"
            );
            assert!(source.is_some(), "the cause is kept");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Management API
// ---------------------------------------------------------------------------------------------

#[test]
fn management_urls_address_the_queue() {
    assert_eq!(
        queue_url("ns.servicebus.windows.net", "batches"),
        "https://ns.servicebus.windows.net/batches?api-version=2021-05"
    );
    assert_eq!(percent_encode("a b/c:d~e"), "a%20b%2Fc%3Ad~e");
}

#[test]
fn shared_access_signatures_match_the_documented_algorithm() {
    // Expected value from Python's hmac, hashlib, base64 and urllib.parse.quote(safe=''):
    // sr = quote(resource); sig = quote(b64(hmac_sha256(key, sr + "\n" + se))).
    let token = shared_access_signature(
        "https://example-ns.servicebus.windows.net/batches",
        "RootManageSharedAccessKey",
        "c2VjcmV0LWtleS1mb3ItdGVzdHM=",
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    )
    .unwrap();
    assert_eq!(
        token,
        "SharedAccessSignature sr=https%3A%2F%2Fexample-ns.servicebus.windows.net%2Fbatches&sig=JLHQBjWiOJYAKuozzySo9i1Pm4QZFlRdCC%2B1ol0c%2BJY%3D&se=1700000000&skn=RootManageSharedAccessKey"
    );
}

/// A queue description as the management API returns it (namespaces and element order as
/// documented for `GET /<queue>?api-version=2021-05`), shortened.
const QUEUE_ENTRY: &str = r#"<entry xmlns="http://www.w3.org/2005/Atom"><id>https://ns.servicebus.windows.net/batches?api-version=2021-05</id><title type="text">batches</title><content type="application/xml"><QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><LockDuration>PT1M</LockDuration><MaxSizeInMegabytes>1024</MaxSizeInMegabytes><MessageCount>12</MessageCount><CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus"><d2p1:ActiveMessageCount>7</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>2</d2p1:DeadLetterMessageCount><d2p1:ScheduledMessageCount>3</d2p1:ScheduledMessageCount><d2p1:TransferMessageCount>0</d2p1:TransferMessageCount><d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails></QueueDescription></content></entry>"#;

#[test]
fn the_backlog_is_the_active_message_count() {
    assert_eq!(active_message_count(QUEUE_ENTRY), Some(7));
    assert_eq!(
        active_message_count("<ActiveMessageCount> 0 </ActiveMessageCount>"),
        Some(0),
        "without a prefix"
    );
    // A missing queue reads as an empty feed.
    let feed = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">Publicly Listed Services</title><id>uuid:1</id><updated>2024-01-01T00:00:00Z</updated></feed>"#;
    assert_eq!(active_message_count(feed), None);
    // Only the exact element: not TransferActiveMessageCount or a closing tag on its own.
    assert_eq!(
        active_message_count("<d:XActiveMessageCount>9</d:XActiveMessageCount>"),
        None
    );
    assert_eq!(active_message_count("</ActiveMessageCount>"), None);
    assert_eq!(
        active_message_count("<ActiveMessageCount>many</ActiveMessageCount>"),
        None
    );
}

#[test]
fn queue_descriptions_carry_the_settings_in_schema_order() {
    let xml = queue_description(&QueueSettings {
        lock_duration: Duration::from_secs(5),
        max_delivery_count: 3,
        auto_delete_on_idle: Some(Duration::from_secs(300)),
    });
    let order = [
        "<LockDuration>PT5S</LockDuration>",
        "<RequiresDuplicateDetection>false</RequiresDuplicateDetection>",
        "<RequiresSession>false</RequiresSession>",
        "<DeadLetteringOnMessageExpiration>true</DeadLetteringOnMessageExpiration>",
        "<MaxDeliveryCount>3</MaxDeliveryCount>",
        "<AutoDeleteOnIdle>PT300S</AutoDeleteOnIdle>",
    ];
    let mut from = 0;
    for element in order {
        let at = xml[from..]
            .find(element)
            .unwrap_or_else(|| panic!("{element} missing or out of order in {xml}"));
        from += at + element.len();
    }
    assert!(xml.starts_with("<?xml"));
    let defaults = queue_description(&QueueSettings::default());
    assert!(defaults.contains("<LockDuration>PT60S</LockDuration>"));
    assert!(defaults.contains("<MaxDeliveryCount>5</MaxDeliveryCount>"));
    assert!(!defaults.contains("AutoDeleteOnIdle"));
    assert_eq!(iso_duration(Duration::from_millis(200)), "PT1S");
    assert_eq!(
        management::TOKEN_SCOPE,
        "https://servicebus.azure.net/.default"
    );
}

// ---------------------------------------------------------------------------------------------
// Lock durations
// ---------------------------------------------------------------------------------------------

fn offline_queue() -> ServiceBusQueue {
    // Nothing connects until a queue call.
    ServiceBusQueue::new(
        "sf-test.servicebus.windows.net",
        Credential::ConnectionString(
            "Endpoint=sb://sf-test.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=a2V5"
                .into(),
        ),
    )
}

/// Deliveries carry the deployed queues' lock durations; other queues get the shortest lock
/// Service Bus allows unless told otherwise.
#[test]
fn lock_durations_come_from_the_queue_settings() {
    let queue = offline_queue();
    assert_eq!(
        queue.lock_duration(queues::BATCHES),
        Duration::from_secs(60)
    );
    assert_eq!(
        queue.lock_duration(queues::STITCH),
        Duration::from_secs(300)
    );
    assert_eq!(queue.lock_duration("elsewhere"), FALLBACK_LOCK_DURATION);
    assert_eq!(FALLBACK_LOCK_DURATION, Duration::from_secs(5));
    let queue = queue.with_lock_duration("elsewhere", Duration::from_secs(30));
    assert_eq!(queue.lock_duration("elsewhere"), Duration::from_secs(30));
    // Clones share what the backend knows.
    assert_eq!(
        queue.clone().lock_duration("elsewhere"),
        Duration::from_secs(30)
    );
}

/// An ISO 8601 duration of the forms Bicep files use here (`PT1M`, `PT5M`, `PT90S`, `PT1M30S`).
fn iso_seconds(text: &str) -> Duration {
    let mut rest = text
        .strip_prefix("PT")
        .unwrap_or_else(|| panic!("{text} is not a PT duration"));
    let mut seconds = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap();
        let n: u64 = rest[..digits].parse().unwrap();
        seconds += n * match &rest[digits..=digits] {
            "H" => 3600,
            "M" => 60,
            "S" => 1,
            unit => panic!("unit {unit} in {text}"),
        };
        rest = &rest[digits + 1..];
    }
    Duration::from_secs(seconds)
}

/// The lock durations the backend assumes for `batches` and `stitch` are those the
/// infrastructure sets: the workers renew from them, so a drift would lose locks.
#[test]
fn deployed_lock_durations_match_the_infrastructure() {
    let bicep = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/modules/servicebus.bicep"),
    )
    .unwrap();
    let mut found = Vec::new();
    for block in bicep.split("resource ").skip(1) {
        if !block.contains("Microsoft.ServiceBus/namespaces/queues@") {
            continue;
        }
        let value = |key: &str| {
            let at = block
                .find(key)
                .unwrap_or_else(|| panic!("{key} missing in {block}"));
            let rest = &block[at + key.len()..];
            let start = rest.find('\'').unwrap() + 1;
            let end = start + rest[start..].find('\'').unwrap();
            rest[start..end].to_owned()
        };
        found.push((value("name:"), iso_seconds(&value("lockDuration:"))));
    }
    assert_eq!(
        found.len(),
        DEPLOYED_LOCK_DURATIONS.len(),
        "queues in the Bicep: {found:?}"
    );
    for (queue, duration) in DEPLOYED_LOCK_DURATIONS {
        assert!(
            found.contains(&(queue.to_owned(), duration)),
            "{queue}: the backend assumes {duration:?}, the infrastructure sets {found:?}"
        );
    }
    assert_eq!(iso_seconds("PT1M30S"), Duration::from_secs(90));
}

// ---------------------------------------------------------------------------------------------
// The conformance suite, against a real namespace
// ---------------------------------------------------------------------------------------------

const LIVE_VAR: &str = "STYLEFLEET_TEST_SERVICEBUS";
const LOCK: Duration = Duration::from_secs(5); // the shortest lock Service Bus allows
const MAX_DELIVERIES: u32 = 3;

/// The namespace to test against, or `None` (after saying so) when none is configured.
fn live(test: &str) -> Option<ServiceBusQueue> {
    let Some(target) = std::env::var(LIVE_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        println!(
            "skipped: no Service Bus credentials for {test} ({LIVE_VAR} is not set; no broker can run on this machine)"
        );
        return None;
    };
    let queue = if target.contains("Endpoint=") {
        ServiceBusQueue::from_connection_string(&target).unwrap()
    } else {
        let spec = if target.contains("://") {
            target
        } else {
            format!("servicebus://{target}")
        };
        let namespace = namespace_of(&spec)
            .unwrap_or_else(|| panic!("{LIVE_VAR} is neither a namespace nor a connection string"));
        ServiceBusQueue::new(namespace.clone(), Credential::from_env(&namespace).unwrap())
    };
    Some(queue)
}

fn caps() -> Capabilities {
    Capabilities {
        // The queues are created without duplicate detection, as the infrastructure creates them.
        dedupes_ids: false,
        // The broker's message counts and scheduled deliveries lag a little.
        patience: Duration::from_secs(30),
        ..Capabilities::new(LOCK, MAX_DELIVERIES)
    }
}

/// A queue name no other run uses.
fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "sf-{}-{nanos:x}-{}",
        std::process::id(),
        test.replace('_', "-")
    )
}

/// Each conformance test on a queue of its own in the live namespace, created and deleted here.
struct Live;

impl conformance::Harness for Live {
    type Queue = ServiceBusQueue;
    type Guard = ();

    fn capabilities() -> Capabilities {
        caps()
    }

    async fn open(test: &str) -> Option<Fixture<ServiceBusQueue>> {
        let queue = live(test)?;
        let name = unique(test);
        queue
            .create_queue(
                &name,
                &QueueSettings {
                    lock_duration: LOCK,
                    max_delivery_count: MAX_DELIVERIES,
                    // A failed run leaves nothing behind for long.
                    auto_delete_on_idle: Some(Duration::from_secs(300)),
                },
            )
            .await
            .unwrap();
        Some(Fixture {
            queue,
            name,
            guard: (),
        })
    }

    async fn close(fixture: Fixture<ServiceBusQueue>) {
        fixture.queue.delete_queue(&fixture.name).await.unwrap();
    }
}

stylefleet::conformance_tests!(Live);

/// A queue that does not exist is reported as such, not as a transient failure to retry.
#[tokio::test]
async fn missing_queues_are_reported() {
    let Some(queue) = live("missing_queues_are_reported") else {
        return;
    };
    let name = unique("missing");
    match queues::Queue::receive(&queue, &name, 1, Duration::from_secs(1)).await {
        Err(QueueError::NoSuchQueue(missing)) => assert_eq!(missing, name),
        other => panic!("receive from a missing queue gave {other:?}"),
    }
    match queues::Queue::backlog(&queue, &name).await {
        Err(QueueError::NoSuchQueue(missing)) => assert_eq!(missing, name),
        other => panic!("backlog of a missing queue gave {other:?}"),
    }
}
