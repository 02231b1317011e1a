//! The deployment's access matrix and a guard that enforces it outside Azure.
//!
//! `infra/access.json` says which identity (functions, worker, aggregator, operator, ...) holds
//! which built-in role on which storage container, account, queue or resource. `roles.bicep`
//! creates the role assignments from it; this module reads the same file (compiled in), so the
//! code and the grants cannot drift apart unseen.
//!
//! With `STYLEFLEET_IDENTITY=<who>` set, [`setup::context`](crate::setup::context) wraps the data
//! store, the log store and the queue of the process in a guard that refuses every operation
//! `<who>` is not granted, with the error Azure gives: a 403 `AuthorizationPermissionMismatch`
//! from Blob Storage (object_store's `PermissionDenied`), `amqp:unauthorized-access` from Service
//! Bus (a permanent [`QueueError::Permanent`]). The tests run each component of the distributed
//! pipeline, and the operator's commands, behind it: a missing grant fails a test here instead of
//! a first deployment. `STYLEFLEET_ACCESS_DENIALS=<file>` also appends each refusal to a file as
//! a JSON line, so that a refusal the code swallows (a failed sweep, say) is still seen;
//! `STYLEFLEET_ACCESS_MATRIX=<file>` reads another matrix (to show what older grants break).
//!
//! How paths map to Azure: the data store and the log store are storage accounts, and the first
//! segment of a path is its container (`jobs/<id>/manifest.json` is blob `<id>/manifest.json` in
//! container `jobs`), as in the deployment. Listing the top of a store lists containers, an
//! account-level operation.
//!
//! # Layout
//!
//! - [`Matrix`]: the parsed file and its questions ([`Matrix::allows_blob`],
//!   [`Matrix::allows_queue`]).
//! - [`Guard`]: one identity under one matrix; [`Guard::store`] and [`Guard::queue`] wrap a store
//!   and a queue.
//! - private `GuardedObjectStore` and `GuardedQueue`: the wrappers.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use serde::Deserialize;

use crate::queue::{self, DeadLetter, Delivery, OutgoingMessage, Queue, QueueError};
use crate::store::Store;

/// The matrix the deployment creates its role assignments from.
const DEPLOYED: &str = include_str!("../infra/access.json");

/// The environment variable naming the identity a process runs as.
pub const IDENTITY_ENV: &str = "STYLEFLEET_IDENTITY";
/// The environment variable naming another matrix file to enforce.
pub const MATRIX_ENV: &str = "STYLEFLEET_ACCESS_MATRIX";
/// The environment variable naming a file each refusal is appended to (one JSON line each).
pub const DENIALS_ENV: &str = "STYLEFLEET_ACCESS_DENIALS";

/// The two storage accounts of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Account {
    /// `input`, `styles`, `jobs`, `output`: the data store.
    Data,
    /// `logs` and the platform's containers: the log store.
    System,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Account::Data => "data",
            Account::System => "system",
        })
    }
}

/// What an operation on blobs needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BlobAction {
    /// Read, list and probe blobs of a container.
    Read,
    /// Create, overwrite, copy onto and delete blobs of a container.
    Write,
    /// List the containers of the account.
    ListContainers,
    /// Create containers in the account.
    CreateContainers,
    /// Request a user delegation key (to sign a SAS).
    Delegate,
}

/// What an operation on a queue needs (Service Bus's claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BusAction {
    /// Send (claim `Send`).
    Send,
    /// Receive, renew, settle, peek, and read the dead-letter subqueue (claim `Listen`).
    Receive,
    /// Read the queue's properties through the management API (claim `Manage`).
    Manage,
}

impl BlobAction {
    /// The action's name in the matrix file.
    pub fn name(self) -> &'static str {
        match self {
            BlobAction::Read => "read",
            BlobAction::Write => "write",
            BlobAction::ListContainers => "list-containers",
            BlobAction::CreateContainers => "create-containers",
            BlobAction::Delegate => "delegate",
        }
    }
}

impl BusAction {
    /// The action's name in the matrix file.
    pub fn name(self) -> &'static str {
        match self {
            BusAction::Send => "send",
            BusAction::Receive => "receive",
            BusAction::Manage => "manage",
        }
    }

    fn claim(self) -> &'static str {
        match self {
            BusAction::Send => "Send",
            BusAction::Receive => "Listen",
            BusAction::Manage => "Manage",
        }
    }
}

/// Errors reading a matrix.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The file could not be read.
    #[error("cannot read the access matrix {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a matrix.
    #[error("the access matrix is malformed")]
    Malformed(#[source] serde_json::Error),
    /// A grant names a role the matrix does not define.
    #[error("a grant to {who} names the undefined role {role}")]
    UnknownRole {
        /// The grantee.
        who: String,
        /// The role.
        role: String,
    },
    /// `STYLEFLEET_IDENTITY` names no identity of the matrix.
    #[error("{IDENTITY_ENV}={who:?} is not an identity of the access matrix (known: {known})")]
    UnknownIdentity {
        /// The name given.
        who: String,
        /// The names the matrix grants anything to.
        known: String,
    },
}

#[derive(Debug, Deserialize)]
struct RoleDef {
    allows: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ContainerGrant {
    who: String,
    account: Account,
    container: String,
    role: String,
}

#[derive(Debug, Deserialize)]
struct AccountGrant {
    who: String,
    account: Account,
    role: String,
}

#[derive(Debug, Deserialize)]
struct QueueGrant {
    who: String,
    queue: String,
    role: String,
}

#[derive(Debug, Deserialize)]
struct ResourceGrant {
    who: String,
}

#[derive(Debug, Deserialize)]
struct File {
    roles: std::collections::BTreeMap<String, RoleDef>,
    containers: Vec<ContainerGrant>,
    accounts: Vec<AccountGrant>,
    queues: Vec<QueueGrant>,
    #[serde(default)]
    resources: Vec<ResourceGrant>,
}

/// Who may do what, as `infra/access.json` says.
#[derive(Debug)]
pub struct Matrix {
    file: File,
}

impl Matrix {
    /// The matrix the deployment uses (compiled in from `infra/access.json`).
    pub fn deployed() -> Result<Matrix, AccessError> {
        Matrix::parse(DEPLOYED)
    }

    /// Parses a matrix and checks that every grant names a defined role.
    pub fn parse(json: &str) -> Result<Matrix, AccessError> {
        let file: File = serde_json::from_str(json).map_err(AccessError::Malformed)?;
        let grants = file
            .containers
            .iter()
            .map(|g| (&g.who, &g.role))
            .chain(file.accounts.iter().map(|g| (&g.who, &g.role)))
            .chain(file.queues.iter().map(|g| (&g.who, &g.role)));
        for (who, role) in grants {
            if !file.roles.contains_key(role) {
                return Err(AccessError::UnknownRole {
                    who: who.clone(),
                    role: role.clone(),
                });
            }
        }
        Ok(Matrix { file })
    }

    /// Every identity the matrix grants anything to.
    pub fn identities(&self) -> BTreeSet<&str> {
        let f = &self.file;
        f.containers
            .iter()
            .map(|g| g.who.as_str())
            .chain(f.accounts.iter().map(|g| g.who.as_str()))
            .chain(f.queues.iter().map(|g| g.who.as_str()))
            .chain(f.resources.iter().map(|g| g.who.as_str()))
            .collect()
    }

    fn role_allows(&self, role: &str, action: &str) -> bool {
        self.file
            .roles
            .get(role)
            .is_some_and(|r| r.allows.iter().any(|a| a == action))
    }

    /// Whether `who` may do `action` on `container` of `account` (`None`: the account itself).
    /// A role granted on the account covers its containers.
    pub fn allows_blob(
        &self,
        who: &str,
        account: Account,
        container: Option<&str>,
        action: BlobAction,
    ) -> bool {
        let action = action.name();
        let on_account = self
            .file
            .accounts
            .iter()
            .any(|g| g.who == who && g.account == account && self.role_allows(&g.role, action));
        on_account
            || container.is_some_and(|c| {
                self.file.containers.iter().any(|g| {
                    g.who == who
                        && g.account == account
                        && g.container == c
                        && self.role_allows(&g.role, action)
                })
            })
    }

    /// Whether `who` may do `action` on `queue`.
    pub fn allows_queue(&self, who: &str, queue: &str, action: BusAction) -> bool {
        let action = action.name();
        self.file
            .queues
            .iter()
            .any(|g| g.who == who && g.queue == queue && self.role_allows(&g.role, action))
    }
}

/// One identity held to one matrix.
#[derive(Debug, Clone)]
pub struct Guard {
    who: String,
    matrix: Arc<Matrix>,
    denials: Option<PathBuf>,
}

impl Guard {
    /// `who` under `matrix`.
    pub fn new(who: &str, matrix: Matrix) -> Result<Guard, AccessError> {
        if !matrix.identities().contains(who) {
            return Err(AccessError::UnknownIdentity {
                who: who.to_owned(),
                known: matrix
                    .identities()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(Guard {
            who: who.to_owned(),
            matrix: Arc::new(matrix),
            denials: None,
        })
    }

    /// The guard the environment asks for: none without `STYLEFLEET_IDENTITY`.
    pub fn from_env() -> Result<Option<Guard>, AccessError> {
        let Some(who) = std::env::var(IDENTITY_ENV).ok().filter(|w| !w.is_empty()) else {
            return Ok(None);
        };
        let matrix = match std::env::var_os(MATRIX_ENV) {
            Some(path) => {
                let path = PathBuf::from(path);
                let json = std::fs::read_to_string(&path)
                    .map_err(|source| AccessError::Read { path, source })?;
                Matrix::parse(&json)?
            }
            None => Matrix::deployed()?,
        };
        let mut guard = Guard::new(&who, matrix)?;
        guard.denials = std::env::var_os(DENIALS_ENV).map(PathBuf::from);
        Ok(Some(guard))
    }

    /// The identity.
    pub fn who(&self) -> &str {
        &self.who
    }

    /// Checks a blob operation; the error is Azure's 403, as object_store reports it.
    pub fn check_blob(
        &self,
        account: Account,
        container: Option<&str>,
        action: BlobAction,
        op: &str,
        path: &str,
    ) -> object_store::Result<()> {
        if self
            .matrix
            .allows_blob(&self.who, account, container, action)
        {
            return Ok(());
        }
        let scope = container.map_or_else(
            || format!("the {account} account"),
            |c| format!("container {c} of the {account} account"),
        );
        let detail = format!("{} lacks {} on {scope}", self.who, action.name());
        self.record(op, &scope, action.name());
        Err(object_store::Error::PermissionDenied {
            path: path.to_owned(),
            source: Box::new(Denied(format!(
                "AuthorizationPermissionMismatch (403): This request is not authorized to perform \
                 this operation using this permission ({op}: {detail})"
            ))),
        })
    }

    /// Checks a queue operation; the error is Service Bus's `amqp:unauthorized-access`.
    pub fn check_queue(&self, queue: &str, action: BusAction, op: &str) -> queue::Result<()> {
        if self.matrix.allows_queue(&self.who, queue, action) {
            return Ok(());
        }
        self.record(op, &format!("queue {queue}"), action.name());
        Err(QueueError::Permanent {
            message: format!(
                "cannot {op} on {queue}: amqp:unauthorized-access: Unauthorized access. '{}' \
                 claim(s) are required to perform this operation ({} holds none on {queue})",
                action.claim(),
                self.who
            ),
            source: None,
        })
    }

    /// `store` (the data store, or the log store) with this identity's grants on `account`.
    pub fn store(&self, store: &Store, account: Account) -> Store {
        let inner = GuardedObjectStore {
            inner: store.object_store().clone(),
            guard: self.clone(),
            account,
        };
        Store::from_object_store(Arc::new(inner), store.spec())
    }

    /// `queue` with this identity's grants.
    pub fn queue(&self, queue: Arc<dyn Queue>) -> Arc<dyn Queue> {
        Arc::new(GuardedQueue {
            inner: queue,
            guard: self.clone(),
        })
    }

    fn record(&self, op: &str, scope: &str, action: &str) {
        tracing::warn!(who = %self.who, op, scope, action, "access refused by the access matrix");
        let Some(path) = &self.denials else { return };
        let line = serde_json::json!({
            "who": self.who, "op": op, "scope": scope, "action": action,
            "pid": std::process::id(),
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %path.display(), "cannot record an access refusal");
        }
    }
}

/// The source of a refusal.
#[derive(Debug)]
struct Denied(String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Denied {}

/// The container a path is in: its first segment.
fn container_of(path: &StorePath) -> Option<String> {
    path.parts().next().map(|p| p.as_ref().to_owned())
}

/// An object store that refuses what its identity may not do.
#[derive(Debug, Clone)]
struct GuardedObjectStore {
    inner: Arc<dyn ObjectStore>,
    guard: Guard,
    account: Account,
}

impl GuardedObjectStore {
    fn check(&self, path: &StorePath, action: BlobAction, op: &str) -> object_store::Result<()> {
        let container = container_of(path);
        let action = match (&container, action) {
            // The top of the account: listing it lists containers.
            (None, BlobAction::Read) => BlobAction::ListContainers,
            (_, action) => action,
        };
        self.guard.check_blob(
            self.account,
            container.as_deref(),
            action,
            op,
            path.as_ref(),
        )
    }
}

impl fmt::Display for GuardedObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} as {}", self.inner, self.guard.who)
    }
}

#[async_trait]
impl ObjectStore for GuardedObjectStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location, BlobAction::Write, "put")?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location, BlobAction::Write, "put_block_list")?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location, BlobAction::Read, "get")?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        // One by one: a refused path fails alone, as a 403 on one blob of a batch would.
        let this = self.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    this.check(&location, BlobAction::Write, "delete")?;
                    this.inner.delete(&location).await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check(
            &prefix.cloned().unwrap_or_default(),
            BlobAction::Read,
            "list",
        ) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        self.check(
            &prefix.cloned().unwrap_or_default(),
            BlobAction::Read,
            "list",
        )?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from, BlobAction::Read, "copy (source)")?;
        self.check(to, BlobAction::Write, "copy")?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// A queue that refuses what its identity may not do.
#[derive(Debug)]
struct GuardedQueue {
    inner: Arc<dyn Queue>,
    guard: Guard,
}

#[async_trait]
impl Queue for GuardedQueue {
    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> queue::Result<()> {
        self.guard.check_queue(queue, BusAction::Send, "send")?;
        self.inner.send(queue, messages).await
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> queue::Result<Vec<Delivery>> {
        self.guard
            .check_queue(queue, BusAction::Receive, "receive")?;
        self.inner.receive(queue, max, wait).await
    }

    fn receives_by_id(&self) -> bool {
        self.inner.receives_by_id()
    }

    async fn receive_by_id(&self, queue: &str, id: &str) -> queue::Result<Option<Delivery>> {
        self.guard
            .check_queue(queue, BusAction::Receive, "receive")?;
        self.inner.receive_by_id(queue, id).await
    }

    async fn complete(&self, delivery: &Delivery) -> queue::Result<()> {
        self.guard
            .check_queue(&delivery.queue, BusAction::Receive, "complete")?;
        self.inner.complete(delivery).await
    }

    async fn abandon(&self, delivery: &Delivery, delay: Option<Duration>) -> queue::Result<()> {
        self.guard
            .check_queue(&delivery.queue, BusAction::Receive, "abandon")?;
        self.inner.abandon(delivery, delay).await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        description: &str,
    ) -> queue::Result<()> {
        self.guard
            .check_queue(&delivery.queue, BusAction::Receive, "dead-letter")?;
        self.inner.dead_letter(delivery, reason, description).await
    }

    async fn renew_lock(&self, delivery: &Delivery) -> queue::Result<SystemTime> {
        self.guard
            .check_queue(&delivery.queue, BusAction::Receive, "renew the lock")?;
        self.inner.renew_lock(delivery).await
    }

    async fn peek_dead_letters(
        &self,
        queue: &str,
        from_sequence: i64,
        max: usize,
    ) -> queue::Result<Vec<DeadLetter>> {
        self.guard
            .check_queue(queue, BusAction::Receive, "peek the dead-letter queue")?;
        self.inner
            .peek_dead_letters(queue, from_sequence, max)
            .await
    }

    async fn receive_dead_letters(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> queue::Result<Vec<Delivery>> {
        self.guard.check_queue(
            queue,
            BusAction::Receive,
            "receive from the dead-letter queue",
        )?;
        self.inner.receive_dead_letters(queue, max, wait).await
    }

    async fn backlog(&self, queue: &str) -> queue::Result<u64> {
        self.guard
            .check_queue(queue, BusAction::Manage, "read the message count")?;
        self.inner.backlog(queue).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_deployed_matrix_parses_and_names_every_component() {
        let m = Matrix::deployed().unwrap();
        let ids = m.identities();
        for who in [
            "functions",
            "worker",
            "aggregator",
            "scaler",
            "pull",
            "events",
            "operator",
        ] {
            assert!(ids.contains(who), "{who} missing from {ids:?}");
        }
    }

    #[test]
    fn container_grants_answer_by_role() {
        let m = Matrix::deployed().unwrap();
        use BlobAction::*;
        assert!(m.allows_blob("worker", Account::Data, Some("jobs"), Write));
        assert!(m.allows_blob("worker", Account::Data, Some("input"), Read));
        assert!(!m.allows_blob("worker", Account::Data, Some("input"), Write));
        assert!(!m.allows_blob("worker", Account::Data, Some("output"), Read));
        assert!(!m.allows_blob("aggregator", Account::Data, Some("styles"), Read));
        assert!(m.allows_blob("aggregator", Account::Data, Some("output"), Write));
        assert!(!m.allows_blob("operator", Account::Data, Some("output"), Write));
        // No component lists the data account's containers.
        for who in ["functions", "worker", "aggregator", "operator"] {
            assert!(
                !m.allows_blob(who, Account::Data, None, ListContainers),
                "{who}"
            );
        }
        // An account-scope role covers the account's containers.
        assert!(m.allows_blob("functions", Account::System, Some("logs"), Write));
        assert!(m.allows_blob("operator", Account::Data, None, Delegate));
        assert!(!m.allows_blob("worker", Account::Data, None, Delegate));
    }

    #[test]
    fn queue_grants_answer_by_claim() {
        let m = Matrix::deployed().unwrap();
        use BusAction::*;
        // A finished batch posts the batch a window after it.
        assert!(m.allows_queue("worker", "batches", Send));
        assert!(m.allows_queue("worker", "batches", Receive));
        assert!(m.allows_queue("worker", "stitch", Send));
        assert!(!m.allows_queue("worker", "stitch", Receive));
        assert!(m.allows_queue("aggregator", "stitch", Receive));
        assert!(!m.allows_queue("aggregator", "stitch", Send));
        assert!(m.allows_queue("scaler", "batches", Manage));
        assert!(!m.allows_queue("operator", "batches", Manage));
    }

    #[test]
    fn a_grant_of_an_undefined_role_is_refused() {
        let json = r#"{"roles": {}, "containers": [], "accounts": [],
            "queues": [{"who": "worker", "queue": "batches", "role": "nope"}]}"#;
        let err = Matrix::parse(json).unwrap_err();
        assert!(matches!(err, AccessError::UnknownRole { .. }), "{err}");
    }

    #[test]
    fn an_unknown_identity_is_refused_with_the_known_ones() {
        let err = Guard::new("wroker", Matrix::deployed().unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("wroker") && text.contains("worker"), "{text}");
    }

    #[tokio::test]
    async fn a_guarded_store_refuses_like_azure_and_allows_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path()).unwrap();
        store.put("input/a.mp4", "video").await.unwrap();
        let denials = dir.path().join("denials.jsonl");
        let mut guard = Guard::new("worker", Matrix::deployed().unwrap()).unwrap();
        guard.denials = Some(denials.clone());
        let worker = guard.store(&store, Account::Data);

        assert_eq!(worker.get("input/a.mp4").await.unwrap().unwrap(), "video");
        worker.put("jobs/j/chunk", "c").await.unwrap();
        let err = worker.put("input/a.mp4", "mine now").await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            matches!(
                &err,
                crate::store::StoreError::Backend {
                    source: object_store::Error::PermissionDenied { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_transient());
        let err = worker.get("output/x.mp4").await.unwrap_err();
        assert!(
            format!("{err:?}").contains("AuthorizationPermissionMismatch"),
            "{err:?}"
        );
        assert!(worker.list("output").await.is_err());
        assert_eq!(
            store.get("input/a.mp4").await.unwrap().unwrap(),
            "video",
            "{text}"
        );

        let lines = std::fs::read_to_string(&denials).unwrap();
        assert_eq!(lines.lines().count(), 3, "{lines}");
        assert!(
            lines.contains("\"op\":\"put\"") && lines.contains("container input"),
            "{lines}"
        );
    }

    #[tokio::test]
    async fn a_guarded_queue_refuses_like_service_bus() {
        let dir = tempfile::tempdir().unwrap();
        let inner = queue::open(
            &dir.path().join("q.sqlite").display().to_string(),
            queue::sqlite::QueueConfig::default(),
        )
        .unwrap();
        let guard = Guard::new("aggregator", Matrix::deployed().unwrap()).unwrap();
        let aggregator = guard.queue(inner.clone());
        let err = aggregator
            .send(queue::STITCH, vec![OutgoingMessage::new("m", "{}")])
            .await
            .unwrap_err();
        assert!(matches!(err, QueueError::Permanent { .. }) && !err.is_transient());
        assert!(
            err.to_string().contains("'Send' claim(s) are required"),
            "{err}"
        );
        inner
            .send(queue::STITCH, vec![OutgoingMessage::new("m", "{}")])
            .await
            .unwrap();
        let got = aggregator
            .receive(queue::STITCH, 1, Duration::from_millis(10))
            .await
            .unwrap();
        aggregator.complete(&got[0]).await.unwrap();
        let err = aggregator.backlog(queue::STITCH).await.unwrap_err();
        assert!(err.to_string().contains("'Manage'"), "{err}");
    }
}
