//! The Azure Service Bus queue backend, over AMQP with `azservicebus`.
//!
//! [`ServiceBusQueue`] opens `servicebus://<namespace>.servicebus.windows.net` (or `sb://...`).
//! The queues must exist (the infrastructure creates `batches` and `stitch`); their lock
//! duration and maximum delivery count are the queues' own settings, so the embedded queue's
//! [`QueueConfig`](super::sqlite::QueueConfig) does not apply here.
//!
//! # Credentials
//!
//! - On Azure, a managed identity: the user-assigned one whose client id is in
//!   `AZURE_CLIENT_ID`, else the default chain (system-assigned identity, then the Azure CLI's
//!   login on a developer's machine). Tokens are for `https://servicebus.azure.net/.default`.
//! - For development only, a namespace connection string in `SERVICEBUS_CONNECTION_STRING`
//!   (shared access key or signature). The deployed namespace disables keys; nothing in the
//!   infrastructure sets this variable.
//!
//! # Behaviour
//!
//! - **Connections.** One AMQP connection per [`ServiceBusQueue`], opened on first use (so that
//!   [`super::open`] stays synchronous); one sender link per queue, one receiver link per queue
//!   and one per dead-letter queue, cached. The crate recovers broken links and connections.
//! - **Send.** Messages without a delay go in AMQP batches (all or none per batch; a send too
//!   large for one batch goes in several, and a failure midway leaves the earlier batches sent,
//!   which idempotent handlers tolerate); messages with a delay are scheduled
//!   (`scheduled_enqueue_time`). The message id, body and content type are mapped by
//!   [`message`].
//! - **Receive.** Peek-lock, no prefetch. A wait is cut into slices of at most half a second so
//!   that settling and lock renewal, which need the same link, are never held up longer; a wait
//!   under a second still waits a second (a round trip to the broker). Once a message arrives,
//!   up to `max` are gathered for another 100 ms at most.
//! - **Settling.** Settling needs the message as it was received on its link, so each link keeps
//!   its unsettled messages by lock token; a token it does not know (settled already, or
//!   received by another process) fails with [`QueueError::LockLost`]. AMQP sends a disposition
//!   without waiting for the broker's outcome, so every settlement is checked with the broker:
//!   the lock is renewed first (a lost lock fails the call with `LockLost`), and afterwards the
//!   backend renews again until the broker reports the lock gone, which proves the settlement
//!   took effect (it fails with [`QueueError::Transient`] if the lock is still held after about
//!   a second).
//! - **Abandon with a delay.** Service Bus cannot delay an abandon, and the workers may not send
//!   to the queue they receive from (they cannot schedule a copy). So the backend keeps the lock
//!   for the delay, renewing it, and abandons when the delay has passed: the message stays
//!   hidden, the broker counts the delivery as usual, and the broker's own maximum delivery count
//!   dead-letters it. When the [`ServiceBusQueue`] is dropped, held messages are abandoned at
//!   once; when the process dies they come back when their lock expires.
//! - **Lock duration.** Each delivery carries its queue's lock duration
//!   ([`Delivery::lock_duration`]), from which the holder times its renewals. The broker reports
//!   only `locked_until`, on its own clock: `locked_until - now` mixes the lock duration with the
//!   difference between the broker's clock and this machine's (minutes on a badly synchronised
//!   host, enough to renew too late or never), and the difference between the expiries before
//!   and after a renewal measures the time between the two lock operations, not the lock. So the
//!   duration comes from the queue's settings, without reading any clock: the values the
//!   infrastructure gives `batches` and `stitch` ([`DEPLOYED_LOCK_DURATIONS`]; a test reads
//!   them out of the Bicep, so the two cannot drift apart), a queue made by
//!   [`ServiceBusQueue::create_queue`] (its settings), or one set with
//!   [`ServiceBusQueue::with_lock_duration`]. Reading the queue description instead would need
//!   the Manage right, which the workers' identity does not have. Any other queue is taken to have
//!   [`FALLBACK_LOCK_DURATION`], the shortest lock Service Bus allows: renewals then come more
//!   often than needed, never too late.
//! - **Dead letters.** Dead-lettering sets the reason and description (cut to 4096 bytes) and the
//!   property `stylefleet-dead-lettered-at`. A dead-letter delivery can be completed (removed) or
//!   abandoned (left there); dead-lettering it again is refused. Peeking reports the broker's
//!   delivery count as is: the crate adds one to it as if the peek were a delivery.
//! - **Backlog** is the queue's active message count (locked messages included; scheduled and
//!   dead-lettered ones not), read through the management API (see [`management`]); it needs the
//!   Manage right.
//! - **Duplicates.** The queues have no duplicate detection: replaying a dead letter re-sends its
//!   id, and handlers are idempotent.
//! - **Errors** are classified by [`error`]: lost locks, missing queues, transient and permanent
//!   failures.
//!
//! No Service Bus broker runs on a development machine or in CI: the tests of this backend that
//! need one run only when `STYLEFLEET_TEST_SERVICEBUS` names a namespace.

pub mod error;
pub mod management;
pub mod message;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azservicebus::amqp::error::TryAddMessageError;
use azservicebus::core::BasicRetryPolicy;
use azservicebus::primitives::service_bus_connection_string_properties::ServiceBusConnectionStringProperties;
use azservicebus::receiver::DeadLetterOptions;
use azservicebus::sender::service_bus_message_batch::CreateMessageBatchOptions;
use azservicebus::{
    ServiceBusClient, ServiceBusClientOptions, ServiceBusMessage, ServiceBusReceiveMode,
    ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusReceiverOptions, ServiceBusSender,
    ServiceBusSenderOptions, SubQueue,
};
use azure_core::credentials::TokenCredential;
use azure_core::http::{HttpClient, Method, Request, Url, new_http_client};
use azure_identity::{
    DefaultAzureCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};
use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::error::{Class, classify, queue_error, to_queue_error};
use self::management::QueueSettings;
use self::message::Received;
use super::{BATCHES, DeadLetter, Delivery, OutgoingMessage, Queue, QueueError, Result, STITCH};

/// Variable holding a namespace connection string (development only).
pub const CONNECTION_STRING_VAR: &str = "SERVICEBUS_CONNECTION_STRING";

/// Variable holding the client id of a user-assigned managed identity.
pub const CLIENT_ID_VAR: &str = "AZURE_CLIENT_ID";

/// The lock durations the infrastructure gives its queues (`infra/modules/servicebus.bicep`:
/// `batches` PT1M, `stitch` PT5M). See the module docs.
pub const DEPLOYED_LOCK_DURATIONS: [(&str, Duration); 2] = [
    (BATCHES, Duration::from_secs(60)),
    (STITCH, Duration::from_secs(300)),
];

/// The lock duration assumed for a queue whose settings this backend does not know: the shortest
/// lock Service Bus allows, so that renewals timed from it are never late.
pub const FALLBACK_LOCK_DURATION: Duration = Duration::from_secs(5);

/// The longest a receive holds its link while waiting.
const RECEIVE_SLICE: Duration = Duration::from_millis(500);

/// The shortest wait of a receive: anything shorter cannot see the broker's answer.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// How long a receive that got one message waits for more, up to its `max`.
const GATHER_WAIT: Duration = Duration::from_millis(100);

/// Pauses between the renewals that confirm a settlement.
const CONFIRM_PAUSES: [Duration; 6] = [
    Duration::from_millis(10),
    Duration::from_millis(30),
    Duration::from_millis(60),
    Duration::from_millis(120),
    Duration::from_millis(250),
    Duration::from_millis(500),
];

/// Unsettled messages whose lock expired this long ago are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The most messages asked of the broker in one receive or peek.
const MAX_BATCH: usize = 256;

/// Delayed messages scheduled in one management request.
const SCHEDULE_CHUNK: usize = 50;

/// The shortest pause between renewals of a lock held for a delayed abandon.
const MIN_HOLD_PAUSE: Duration = Duration::from_millis(200);

/// How the backend authenticates.
#[derive(Clone)]
pub enum Credential {
    /// A namespace connection string with a shared access key or signature: development only.
    ConnectionString(String),
    /// An Entra ID credential (managed identity, Azure CLI).
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        match self {
            Credential::ConnectionString(_) => f.write_str("ConnectionString(..)"),
            Credential::Token(credential) => f.debug_tuple("Token").field(credential).finish(),
        }
    }
}

impl Credential {
    /// The credential the environment names for `namespace`: `SERVICEBUS_CONNECTION_STRING`
    /// (which must be for that namespace), else the managed identity `AZURE_CLIENT_ID` names,
    /// else the default chain (system-assigned managed identity, Azure CLI).
    pub fn from_env(namespace: &str) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(text) = var(CONNECTION_STRING_VAR) {
            let host = connection_string_namespace(&text)?;
            if !host.eq_ignore_ascii_case(namespace) {
                return Err(permanent_msg(format!(
                    "{CONNECTION_STRING_VAR} is for {host}, but the queue is in {namespace}"
                )));
            }
            return Ok(Credential::ConnectionString(text));
        }
        let credential: Arc<dyn TokenCredential> = match var(CLIENT_ID_VAR) {
            Some(client_id) => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: Some(UserAssignedId::ClientId(client_id)),
                    ..ManagedIdentityCredentialOptions::default()
                }))
                .map_err(|e| permanent("cannot set up the managed identity credential", Some(e)))?
            }
            None => DefaultAzureCredential::new()
                .map_err(|e| permanent("cannot set up the default Azure credential", Some(e)))?,
        };
        Ok(Credential::Token(credential))
    }
}

/// The namespace (fully qualified host name) a queue spec names: `servicebus://<host>` or
/// `sb://<host>`, where a host without a dot is a namespace name in the public cloud
/// (`<name>.servicebus.windows.net`). `None` when `spec` is not a Service Bus spec.
pub fn namespace_of(spec: &str) -> Option<String> {
    let rest = spec
        .strip_prefix("servicebus://")
        .or_else(|| spec.strip_prefix("sb://"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some(if host.contains('.') {
        host.to_ascii_lowercase()
    } else {
        format!("{}.servicebus.windows.net", host.to_ascii_lowercase())
    })
}

/// The namespace a connection string is for.
pub fn connection_string_namespace(text: &str) -> Result<String> {
    let properties = ServiceBusConnectionStringProperties::parse(text)
        .map_err(|e| permanent("the Service Bus connection string is malformed", Some(e)))?;
    properties
        .fully_qualified_namespace()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| permanent_msg("the Service Bus connection string has no Endpoint"))
}

/// The Azure Service Bus peek-lock queue backend. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct ServiceBusQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceBusQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusQueue")
            .field("namespace", &self.inner.namespace)
            .field("credential", &self.inner.credential)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Fully qualified host name of the namespace.
    namespace: String,
    credential: Credential,
    /// The AMQP connection, opened on first use; a failed attempt is not kept, so the next call
    /// tries again. The mutex serialises link creation, which needs the client mutably.
    client: OnceCell<Mutex<ServiceBusClient<BasicRetryPolicy>>>,
    /// Sender links by queue; each behind a mutex because sending needs the link mutably.
    senders: Mutex<HashMap<String, Arc<Mutex<ServiceBusSender>>>>,
    /// Receiver links by queue and whether they read the dead-letter queue.
    links: Mutex<HashMap<(String, bool), Arc<Link>>>,
    /// For the management API.
    http: Arc<dyn HttpClient>,
    /// Lock durations of the queues whose settings are known (see the module docs); a std
    /// mutex, never held across an await.
    lock_durations: std::sync::Mutex<HashMap<String, Duration>>,
    /// Cancelled when the last handle goes: ends the tasks that hold locks for delayed abandons.
    closed: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// One receiver link and the messages received on it that are not settled yet.
struct Link {
    /// The queue (for dead letters: the queue whose dead-letter queue this reads).
    queue: String,
    /// Whether this link reads the dead-letter queue.
    dead: bool,
    /// The link; receiving, settling and renewing all need it mutably.
    receiver: Mutex<ServiceBusReceiver>,
    /// Unsettled messages by lock token. Each slot has its own mutex so that a renewal and a
    /// settlement of the same message take turns; a slot emptied by a settlement means the lock
    /// is gone. A std mutex: it is never held across an await.
    unsettled: std::sync::Mutex<HashMap<String, Slot>>,
}

type Slot = Arc<Mutex<Option<ServiceBusReceivedMessage>>>;

impl Link {
    fn slot(&self, lock_token: &str) -> Option<Slot> {
        self.unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(lock_token)
            .cloned()
    }

    fn forget(&self, lock_token: &str) {
        self.unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(lock_token);
    }

    fn remember(&self, lock_token: String, message: ServiceBusReceivedMessage) {
        self.unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(lock_token, Arc::new(Mutex::new(Some(message))));
    }

    /// Drops messages whose lock expired long ago: they can no longer be settled, and a holder
    /// that never settles them must not make the map grow.
    fn forget_expired(&self, now: SystemTime) {
        let mut unsettled = self
            .unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unsettled.retain(|_, slot| match slot.try_lock() {
            Ok(message) => match message.as_ref() {
                Some(message) => match message.locked_until() {
                    Some(until) => message::system_time(until) + FORGET_AFTER > now,
                    None => true,
                },
                None => false,
            },
            // In use: a renewal or settlement is under way.
            Err(_) => true,
        });
    }
}

/// How a settlement ends a delivery.
enum Settlement {
    Complete,
    Abandon,
    DeadLetter { reason: String, description: String },
}

impl Settlement {
    fn verb(&self) -> &'static str {
        match self {
            Settlement::Complete => "complete",
            Settlement::Abandon => "abandon",
            Settlement::DeadLetter { .. } => "dead-letter",
        }
    }
}

impl ServiceBusQueue {
    /// Opens the namespace `spec` names (`servicebus://<namespace>.servicebus.windows.net` or
    /// `sb://...`), with the credential [`Credential::from_env`] picks. Connects on first use.
    pub fn open(spec: &str) -> Result<Self> {
        let namespace = namespace_of(spec).ok_or_else(|| {
            permanent_msg(format!(
                    "{spec} is not a Service Bus namespace URL (servicebus://<namespace>.servicebus.windows.net)"
                ))
        })?;
        let credential = Credential::from_env(&namespace)?;
        Ok(Self::new(namespace, credential))
    }

    /// Opens the namespace a connection string is for, with its key (development only).
    pub fn from_connection_string(text: &str) -> Result<Self> {
        let namespace = connection_string_namespace(text)?;
        Ok(Self::new(
            namespace,
            Credential::ConnectionString(text.to_owned()),
        ))
    }

    /// Opens `namespace` (a fully qualified host name) with `credential`. Connects on first use.
    pub fn new(namespace: impl Into<String>, credential: Credential) -> Self {
        Self {
            inner: Arc::new(Inner {
                namespace: namespace.into(),
                credential,
                client: OnceCell::new(),
                senders: Mutex::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
                http: new_http_client(),
                lock_durations: std::sync::Mutex::new(
                    DEPLOYED_LOCK_DURATIONS
                        .iter()
                        .map(|(queue, duration)| ((*queue).to_owned(), *duration))
                        .collect(),
                ),
                closed: CancellationToken::new(),
            }),
        }
    }

    /// Says that `queue`'s locks last `lock_duration` (a namespace whose queues are not set up
    /// as the infrastructure sets them up); deliveries from it carry this duration.
    pub fn with_lock_duration(self, queue: &str, lock_duration: Duration) -> Self {
        self.set_lock_duration(queue, lock_duration);
        self
    }

    /// The lock duration that deliveries from `queue` carry: the queue's known setting, else
    /// [`FALLBACK_LOCK_DURATION`].
    pub fn lock_duration(&self, queue: &str) -> Duration {
        self.inner
            .lock_durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .copied()
            .unwrap_or(FALLBACK_LOCK_DURATION)
    }

    fn set_lock_duration(&self, queue: &str, lock_duration: Duration) {
        self.inner
            .lock_durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.to_owned(), lock_duration);
    }

    /// The namespace's fully qualified host name.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Creates `queue` with `settings` through the management API (needs the Manage right). A
    /// queue that exists already is left as it is (and its lock duration stays unknown unless
    /// set with [`Self::with_lock_duration`]). For development namespaces and tests: on Azure
    /// the infrastructure creates the queues.
    pub async fn create_queue(&self, queue: &str, settings: &QueueSettings) -> Result<()> {
        let mut request = self.management_request(queue, Method::Put).await?;
        request.insert_header("content-type", management::ATOM_ENTRY);
        request.set_body(management::queue_description(settings).into_bytes());
        let (status, body) = self.call(queue, "create the queue", &request).await?;
        match status {
            200..=299 => {
                // The description states the lock in whole seconds.
                let seconds = settings.lock_duration.as_secs().max(1);
                self.set_lock_duration(queue, Duration::from_secs(seconds));
                Ok(())
            }
            409 => Ok(()),
            _ => Err(http_error(status, &body, "create the queue", queue)),
        }
    }

    /// Deletes `queue` through the management API (needs the Manage right). A missing queue is
    /// not an error.
    pub async fn delete_queue(&self, queue: &str) -> Result<()> {
        let request = self.management_request(queue, Method::Delete).await?;
        let (status, body) = self.call(queue, "delete the queue", &request).await?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(http_error(status, &body, "delete the queue", queue)),
        }
    }

    /// The AMQP client, connecting on first use.
    async fn client(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, ServiceBusClient<BasicRetryPolicy>>> {
        let inner = &self.inner;
        let client = inner
            .client
            .get_or_try_init(|| async {
                let options = ServiceBusClientOptions::default();
                let client = match &inner.credential {
                    Credential::ConnectionString(text) => {
                        ServiceBusClient::new_from_connection_string(text.as_str(), options).await
                    }
                    Credential::Token(credential) => {
                        ServiceBusClient::new_from_token_credential(
                            inner.namespace.clone(),
                            Arc::clone(credential),
                            options,
                        )
                        .await
                    }
                };
                client.map(Mutex::new).map_err(|e| {
                    let class = match classify(&e) {
                        // Nothing is queue-specific while connecting.
                        Class::NoSuchQueue => Class::Permanent,
                        class => class,
                    };
                    to_queue_error(class, "connect", &inner.namespace, None, Some(Box::new(e)))
                })
            })
            .await?;
        Ok(client.lock().await)
    }

    /// The sender link of `queue`, attached on first use.
    async fn sender(&self, queue: &str) -> Result<Arc<Mutex<ServiceBusSender>>> {
        let mut senders = self.inner.senders.lock().await;
        if let Some(sender) = senders.get(queue) {
            return Ok(Arc::clone(sender));
        }
        let sender = self
            .client()
            .await?
            .create_sender(queue, ServiceBusSenderOptions::default())
            .await
            .map_err(|e| queue_error(e, "attach a sender", queue, None))?;
        let sender = Arc::new(Mutex::new(sender));
        senders.insert(queue.to_owned(), Arc::clone(&sender));
        Ok(sender)
    }

    /// The receiver link of `queue` (of its dead-letter queue when `dead`), attached on first
    /// use.
    async fn link(&self, queue: &str, dead: bool) -> Result<Arc<Link>> {
        let mut links = self.inner.links.lock().await;
        if let Some(link) = links.get(&(queue.to_owned(), dead)) {
            return Ok(Arc::clone(link));
        }
        let options = ServiceBusReceiverOptions {
            prefetch_count: 0,
            receive_mode: ServiceBusReceiveMode::PeekLock,
            identifier: None,
            sub_queue: if dead {
                SubQueue::DeadLetter
            } else {
                SubQueue::None
            },
        };
        let receiver = self
            .client()
            .await?
            .create_receiver_for_queue(queue, options)
            .await
            .map_err(|e| queue_error(e, "attach a receiver", queue, None))?;
        let link = Arc::new(Link {
            queue: queue.to_owned(),
            dead,
            receiver: Mutex::new(receiver),
            unsettled: std::sync::Mutex::new(HashMap::new()),
        });
        links.insert((queue.to_owned(), dead), Arc::clone(&link));
        Ok(link)
    }

    /// The link a delivery was received on, if it is still there.
    async fn link_of(&self, delivery: &Delivery) -> Option<Arc<Link>> {
        let key = (delivery.queue.clone(), delivery.dead_letter.is_some());
        self.inner.links.lock().await.get(&key).cloned()
    }

    /// Drops a link that failed in a way its own recovery will not mend; its unsettled messages
    /// can no longer be settled (their locks run out).
    async fn evict(&self, link: &Arc<Link>) {
        let mut links = self.inner.links.lock().await;
        let key = (link.queue.clone(), link.dead);
        if links.get(&key).is_some_and(|l| Arc::ptr_eq(l, link)) {
            links.remove(&key);
        }
    }

    /// The link and slot holding `delivery`'s message, or `LockLost`.
    async fn held(&self, delivery: &Delivery) -> Result<(Arc<Link>, Slot)> {
        let link = self
            .link_of(delivery)
            .await
            .ok_or_else(|| lock_lost(delivery))?;
        let slot = link
            .slot(&delivery.lock_token)
            .ok_or_else(|| lock_lost(delivery))?;
        Ok((link, slot))
    }

    async fn receive_on(
        &self,
        link: &Arc<Link>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max = u32::try_from(max.min(MAX_BATCH)).unwrap_or(1);
        let deadline = Instant::now() + wait.max(MIN_WAIT);
        let mut messages = Vec::new();
        while messages.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut receiver = link.receiver.lock().await;
            let first = receiver
                .receive_messages_with_max_wait_time(1, left.min(RECEIVE_SLICE))
                .await;
            let first = match first {
                Ok(first) => first,
                Err(e) => {
                    drop(receiver);
                    let error = queue_error(e, "receive", &link.queue, None);
                    if !error.is_transient() {
                        self.evict(link).await;
                    }
                    return Err(error);
                }
            };
            messages.extend(first);
            if !messages.is_empty() && max > 1 {
                match receiver
                    .receive_messages_with_max_wait_time(max - 1, GATHER_WAIT)
                    .await
                {
                    Ok(more) => messages.extend(more),
                    // The first message is in hand: return it; the next receive meets the
                    // failure again if it lasts.
                    Err(error) => {
                        tracing::debug!(queue = %link.queue, %error, "gathering more messages failed")
                    }
                }
            }
        }
        let now = SystemTime::now();
        link.forget_expired(now);
        // A dead-letter queue locks for its queue's duration.
        let lock_duration = self.lock_duration(&link.queue);
        let mut deliveries = Vec::with_capacity(messages.len());
        for received in messages {
            let token = message::lock_token_text(received.lock_token().as_ref());
            let delivery = read_received(&received).into_delivery(
                &link.queue,
                token.clone(),
                link.dead,
                lock_duration,
                now,
            );
            link.remember(token, received);
            deliveries.push(delivery);
        }
        Ok(deliveries)
    }

    /// Settles `delivery`, checking with the broker that it held the lock and that the
    /// settlement took effect.
    async fn settle(&self, delivery: &Delivery, settlement: Settlement) -> Result<()> {
        let verb = settlement.verb();
        let (link, slot) = self.held(delivery).await?;
        let mut held = slot.lock().await;
        let Some(message) = held.as_mut() else {
            return Err(lock_lost(delivery));
        };
        {
            let mut receiver = link.receiver.lock().await;
            // The disposition below cannot report a lost lock; the renewal can.
            if let Err(e) = receiver.renew_message_lock(message).await {
                let error = queue_error(e, verb, &delivery.queue, Some(&delivery.id));
                if matches!(error, QueueError::LockLost { .. }) {
                    *held = None;
                    link.forget(&delivery.lock_token);
                }
                return Err(error);
            }
            let sent = match &settlement {
                Settlement::Complete => receiver.complete_message(&*message).await,
                Settlement::Abandon => receiver.abandon_message(&*message, None).await,
                Settlement::DeadLetter {
                    reason,
                    description,
                } => {
                    let options = DeadLetterOptions {
                        dead_letter_reason: Some(message::dead_letter_text(reason)),
                        dead_letter_error_description: Some(message::dead_letter_text(description)),
                        properties_to_modify: Some(message::dead_letter_properties(
                            SystemTime::now(),
                        )),
                    };
                    receiver.dead_letter_message(&*message, options).await
                }
            };
            sent.map_err(|e| queue_error(e, verb, &delivery.queue, Some(&delivery.id)))?;
        }
        // The broker settles asynchronously: a renewal that fails with a lost lock proves it has.
        for pause in CONFIRM_PAUSES {
            tokio::time::sleep(pause).await;
            let renewed = link.receiver.lock().await.renew_message_lock(message).await;
            match renewed {
                Ok(()) => continue,
                Err(e) => {
                    let class = classify(&e);
                    if !matches!(class, Class::LockLost | Class::NoSuchQueue) {
                        // The disposition went out; at-least-once delivery covers the rare case
                        // where it did not land.
                        tracing::warn!(queue = %delivery.queue, id = %delivery.id, error = %e, "could not confirm the {verb}");
                    }
                    *held = None;
                    link.forget(&delivery.lock_token);
                    return Ok(());
                }
            }
        }
        Err(QueueError::Transient {
            message: format!(
                "service bus: the broker did not confirm the {verb} of {} on {}; the lock is still held",
                delivery.id, delivery.queue
            ),
            source: None,
        })
    }

    /// Abandons `delivery` after `delay`: keeps its lock meanwhile (see the module docs).
    async fn abandon_later(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let (link, slot) = self.held(delivery).await?;
        let mut held = slot.lock().await;
        let Some(message) = held.as_mut() else {
            return Err(lock_lost(delivery));
        };
        let renewed = link.receiver.lock().await.renew_message_lock(message).await;
        if let Err(e) = renewed {
            let error = queue_error(e, "abandon", &delivery.queue, Some(&delivery.id));
            if matches!(error, QueueError::LockLost { .. }) {
                *held = None;
                link.forget(&delivery.lock_token);
            }
            return Err(error);
        }
        let Some(message) = held.take() else {
            return Err(lock_lost(delivery));
        };
        link.forget(&delivery.lock_token);
        let closed = self.inner.closed.clone();
        let id = delivery.id.clone();
        tokio::spawn(hold_then_abandon(link, message, id, delay, closed));
        Ok(())
    }

    /// A request to the management API for `queue`, authorized.
    async fn management_request(&self, queue: &str, method: Method) -> Result<Request> {
        let url = management::queue_url(&self.inner.namespace, queue);
        let url = Url::parse(&url)
            .map_err(|e| permanent(format!("bad management URL {url}"), Some(e)))?;
        let resource = format!("https://{}/{}", self.inner.namespace, queue);
        let authorization = self.authorization(&resource, queue).await?;
        let mut request = Request::new(url, method);
        request.insert_header("authorization", authorization);
        Ok(request)
    }

    /// The `Authorization` header for the management API.
    async fn authorization(&self, resource: &str, queue: &str) -> Result<String> {
        match &self.inner.credential {
            Credential::Token(credential) => {
                let token = credential
                    .get_token(&[management::TOKEN_SCOPE], None)
                    .await
                    .map_err(|e| {
                        let class = match classify(&e) {
                            Class::NoSuchQueue => Class::Permanent,
                            class => class,
                        };
                        to_queue_error(class, "get a token", queue, None, Some(Box::new(e)))
                    })?;
                Ok(format!("Bearer {}", token.token.secret()))
            }
            Credential::ConnectionString(text) => {
                let properties =
                    ServiceBusConnectionStringProperties::parse(text).map_err(|e| {
                        permanent("the Service Bus connection string is malformed", Some(e))
                    })?;
                if let Some(signature) = properties.shared_access_signature() {
                    return Ok(signature.to_owned());
                }
                match (
                    properties.shared_access_key_name(),
                    properties.shared_access_key(),
                ) {
                    (Some(name), Some(key)) => management::shared_access_signature(
                        resource,
                        name,
                        key,
                        SystemTime::now() + management::SAS_VALIDITY,
                    ),
                    _ => Err(permanent_msg(
                        "the Service Bus connection string has neither a key nor a signature",
                    )),
                }
            }
        }
    }

    /// Sends a management request; returns the status and body.
    async fn call(&self, queue: &str, what: &str, request: &Request) -> Result<(u16, String)> {
        let response = self
            .inner
            .http
            .execute_request(request)
            .await
            .map_err(|e| queue_error(e, what, queue, None))?;
        let status = u16::from(response.status());
        let body = response
            .into_body()
            .collect_string()
            .await
            .map_err(|e| queue_error(e, what, queue, None))?;
        Ok((status, body))
    }
}

/// Keeps `message`'s lock for `delay`, then abandons it; abandons at once when the queue closes.
async fn hold_then_abandon(
    link: Arc<Link>,
    mut message: ServiceBusReceivedMessage,
    id: String,
    delay: Duration,
    closed: CancellationToken,
) {
    let until = Instant::now() + delay;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Renew at half the remaining lock, or abandon at the end of the delay if sooner.
        let lock_left = message
            .locked_until()
            .map(message::system_time)
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let pause = left.min((lock_left / 2).max(MIN_HOLD_PAUSE));
        tokio::select! {
            () = closed.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
        if Instant::now() >= until {
            break;
        }
        let renewed = link
            .receiver
            .lock()
            .await
            .renew_message_lock(&mut message)
            .await;
        if let Err(error) = renewed {
            if classify(&error) == Class::LockLost {
                // It is back in the queue already, a little early.
                tracing::debug!(queue = %link.queue, %id, "lock lost while delaying an abandon");
                return;
            }
            tracing::warn!(queue = %link.queue, %id, %error, "lock renewal failed while delaying an abandon");
        }
    }
    let abandoned = link
        .receiver
        .lock()
        .await
        .abandon_message(&message, None)
        .await;
    if let Err(error) = abandoned {
        // The lock runs out instead; the message comes back then.
        tracing::warn!(queue = %link.queue, %id, %error, "delayed abandon failed");
    }
}

/// Reads what the queue needs out of a received message.
fn read_received(received: &ServiceBusReceivedMessage) -> Received {
    let raw = received.raw_amqp_message();
    let properties = raw.application_properties.as_ref();
    Received {
        id: received.message_id().map(|id| id.into_owned()),
        sequence: received.sequence_number(),
        body: message::body_bytes(&raw.body),
        delivery_count: received.delivery_count().unwrap_or(1),
        enqueued_at: message::system_time(received.enqueued_time()),
        locked_until: received.locked_until().map(message::system_time),
        dead_letter_reason: message::property_text(properties, message::DEAD_LETTER_REASON),
        dead_letter_description: message::property_text(
            properties,
            message::DEAD_LETTER_DESCRIPTION,
        ),
        dead_lettered_at: message::dead_lettered_at(properties),
    }
}

/// Reads what the queue needs out of a peeked message.
fn read_peeked(peeked: &azservicebus::ServiceBusPeekedMessage) -> Received {
    let raw = peeked.raw_amqp_message();
    let properties = raw.application_properties.as_ref();
    Received {
        id: peeked.message_id().map(|id| id.into_owned()),
        sequence: peeked.sequence_number(),
        body: message::body_bytes(&raw.body),
        // The broker's count as is: the crate's accessor adds one, as for a delivery.
        delivery_count: raw.header.as_ref().map_or(0, |h| h.delivery_count),
        enqueued_at: message::system_time(peeked.enqueued_time()),
        locked_until: None,
        dead_letter_reason: message::property_text(properties, message::DEAD_LETTER_REASON),
        dead_letter_description: message::property_text(
            properties,
            message::DEAD_LETTER_DESCRIPTION,
        ),
        dead_lettered_at: message::dead_lettered_at(properties),
    }
}

fn permanent_msg(message: impl Into<String>) -> QueueError {
    QueueError::Permanent {
        message: message.into(),
        source: None,
    }
}

fn lock_lost(delivery: &Delivery) -> QueueError {
    QueueError::LockLost {
        id: delivery.id.clone(),
    }
}

fn permanent<E>(message: impl Into<String>, source: Option<E>) -> QueueError
where
    E: std::error::Error + Send + Sync + 'static,
{
    QueueError::Permanent {
        message: message.into(),
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

/// The error for an unexpected management API status.
fn http_error(status: u16, body: &str, what: &str, queue: &str) -> QueueError {
    let detail: String = body.chars().take(300).collect();
    let error = to_queue_error(error::classify_status(status), what, queue, None, None);
    match error {
        QueueError::Transient { message, source } => QueueError::Transient {
            message: format!("{message}: HTTP {status}: {detail}"),
            source,
        },
        QueueError::Permanent { message, source } => QueueError::Permanent {
            message: format!("{message}: HTTP {status}: {detail}"),
            source,
        },
        other => other,
    }
}

#[async_trait]
impl Queue for ServiceBusQueue {
    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        // Map everything first: a bad id fails the whole send before anything is sent.
        let mut now_messages = Vec::new();
        let mut later: Vec<(Duration, Vec<ServiceBusMessage>)> = Vec::new();
        for outgoing in &messages {
            let mapped = message::to_service_bus(outgoing)?;
            match outgoing.delay.filter(|d| !d.is_zero()) {
                None => now_messages.push(mapped),
                Some(delay) => match later.iter_mut().find(|(d, _)| *d == delay) {
                    Some((_, group)) => group.push(mapped),
                    None => later.push((delay, vec![mapped])),
                },
            }
        }
        let sender = self.sender(queue).await?;
        let mut sender = sender.lock().await;
        let send_error = |e| queue_error(e, "send", queue, None);
        let new_batch = |sender: &ServiceBusSender| {
            sender
                .create_message_batch(CreateMessageBatchOptions::default())
                .map_err(|e| {
                    permanent(
                        format!("service bus: cannot make a batch for {queue}"),
                        Some(e),
                    )
                })
        };
        let mut batch = new_batch(&sender)?;
        for mapped in now_messages {
            let mapped = match batch.try_add_message(mapped) {
                Ok(()) => continue,
                Err(TryAddMessageError::BatchFull(mapped)) if !batch.is_empty() => mapped,
                Err(e) => {
                    return Err(permanent(
                        format!("service bus: a message does not fit a batch for {queue}"),
                        Some(e),
                    ));
                }
            };
            let full = std::mem::replace(&mut batch, new_batch(&sender)?);
            sender.send_message_batch(full).await.map_err(send_error)?;
            batch.try_add_message(mapped).map_err(|e| {
                permanent(
                    format!("service bus: a message does not fit a batch for {queue}"),
                    Some(e),
                )
            })?;
        }
        if !batch.is_empty() {
            sender.send_message_batch(batch).await.map_err(send_error)?;
        }
        let now = SystemTime::now();
        for (delay, group) in later {
            let at = message::scheduled_time(now, delay);
            let mut group = group.into_iter().peekable();
            while group.peek().is_some() {
                let chunk: Vec<ServiceBusMessage> = group.by_ref().take(SCHEDULE_CHUNK).collect();
                sender
                    .schedule_messages(chunk, at)
                    .await
                    .map_err(|e| queue_error(e, "schedule", queue, None))?;
            }
        }
        Ok(())
    }

    async fn receive(&self, queue: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let link = self.link(queue, false).await?;
        self.receive_on(&link, max, wait).await
    }

    async fn complete(&self, delivery: &Delivery) -> Result<()> {
        self.settle(delivery, Settlement::Complete).await
    }

    async fn abandon(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()> {
        match delay.filter(|d| !d.is_zero()) {
            None => self.settle(delivery, Settlement::Abandon).await,
            Some(delay) => self.abandon_later(delivery, delay).await,
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        description: &str,
    ) -> Result<()> {
        if delivery.dead_letter.is_some() {
            return Err(QueueError::Permanent {
                message: format!(
                    "service bus: {} is in the dead-letter queue of {} already",
                    delivery.id, delivery.queue
                ),
                source: None,
            });
        }
        self.settle(
            delivery,
            Settlement::DeadLetter {
                reason: reason.to_owned(),
                description: description.to_owned(),
            },
        )
        .await
    }

    async fn renew_lock(&self, delivery: &Delivery) -> Result<SystemTime> {
        let (link, slot) = self.held(delivery).await?;
        let mut held = slot.lock().await;
        let Some(message) = held.as_mut() else {
            return Err(lock_lost(delivery));
        };
        let renewed = link.receiver.lock().await.renew_message_lock(message).await;
        match renewed {
            Ok(()) => Ok(message
                .locked_until()
                .map(message::system_time)
                .unwrap_or_else(SystemTime::now)),
            Err(e) => {
                let error = queue_error(e, "renew the lock", &delivery.queue, Some(&delivery.id));
                if matches!(error, QueueError::LockLost { .. }) {
                    *held = None;
                    link.forget(&delivery.lock_token);
                }
                Err(error)
            }
        }
    }

    async fn peek_dead_letters(
        &self,
        queue: &str,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<DeadLetter>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let link = self.link(queue, true).await?;
        let max = u32::try_from(max.min(MAX_BATCH)).unwrap_or(1);
        let peeked = link
            .receiver
            .lock()
            .await
            .peek_messages(max, Some(from_sequence))
            .await
            .map_err(|e| queue_error(e, "peek dead letters", queue, None))?;
        Ok(peeked
            .iter()
            .map(|p| read_peeked(p).into_dead_letter(queue))
            .collect())
    }

    async fn receive_dead_letters(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let link = self.link(queue, true).await?;
        self.receive_on(&link, max, wait).await
    }

    async fn backlog(&self, queue: &str) -> Result<u64> {
        let request = self.management_request(queue, Method::Get).await?;
        let (status, body) = self
            .call(queue, "read the queue's message count", &request)
            .await?;
        if !(200..=299).contains(&status) {
            return Err(http_error(
                status,
                &body,
                "read the queue's message count",
                queue,
            ));
        }
        management::active_message_count(&body)
            .ok_or_else(|| QueueError::NoSuchQueue(queue.to_owned()))
    }
}
