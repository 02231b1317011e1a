//! The fleet's web page (`stylefleet up --ui ADDR`): one page with the jobs (progress, state, the
//! latest styled frame beside its source frame, the failure), the dead letters with a replay
//! button, and the worker count as the autoscaler moves it. It reads the same store and queue as
//! `status` and `dlq`, and keeps no state of its own beyond a cache of thumbnails.
//!
//! The page can replay dead letters, so it listens on a loopback address unless the caller says
//! otherwise ([`UiOptions::public`]); on loopback it also refuses requests whose `Host` is not a
//! loopback name (a web page elsewhere that renamed itself to 127.0.0.1 gets nothing), and the
//! replay takes a JSON body, which a page elsewhere cannot send without the browser asking first.
//!
//! # Layout
//!
//! - `mod.rs`: the address check, the routes and the server.
//! - [`state`]: what the page shows, read afresh at each poll.
//! - [`page`]: the HTML, its stylesheet and script.
//! - [`thumbs`]: the frame thumbnails, made with ffmpeg once per chunk.

pub mod page;
pub mod state;
pub mod thumbs;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dlq::{self, BulkReport, Filter};
use crate::fleet::WorkerCount;
use crate::job::JobId;
use crate::queue::{BATCHES, STITCH};
use crate::stage::Context;
use thumbs::{ThumbError, Thumbnails};

/// Where the page listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiOptions {
    /// The address (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Whether an address other than loopback is allowed: anyone who reaches it can replay dead
    /// letters.
    pub public: bool,
}

/// Why the page cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// A non-loopback address without [`UiOptions::public`].
    #[error(
        "--ui {addr}: not a loopback address. The page can replay dead letters, so it listens on \
         this machine only (127.0.0.1 or [::1]) unless --ui-public is given"
    )]
    NotLoopback {
        /// The address.
        addr: SocketAddr,
    },
    /// The address cannot be bound.
    #[error("--ui {addr}: cannot listen there")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Refuses a non-loopback address unless `public`.
pub fn check_addr(options: &UiOptions) -> Result<(), UiError> {
    if options.public || options.addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(UiError::NotLoopback { addr: options.addr })
    }
}

/// A running page.
#[derive(Debug)]
pub struct UiServer {
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl UiServer {
    /// The address it listens on (with the port it got, when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Waits until the server has stopped (after the shutdown token given to [`start`]).
    pub async fn stopped(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the web page failed"),
            Err(e) => tracing::error!(error = %e, "the web page's task failed"),
        }
    }
}

/// What the handlers share.
struct App {
    ctx: Context,
    /// The fleet's worker count, as last published.
    workers: watch::Receiver<WorkerCount>,
    thumbs: Thumbnails,
    /// The `Host` values accepted, or `None` for any (a public address).
    hosts: Option<Vec<String>>,
}

/// Checks the address, binds it, and serves the page until `shutdown` is cancelled.
pub async fn start(
    ctx: Context,
    options: &UiOptions,
    workers: watch::Receiver<WorkerCount>,
    shutdown: CancellationToken,
) -> Result<UiServer, UiError> {
    check_addr(options)?;
    let bind = |source| UiError::Bind {
        addr: options.addr,
        source,
    };
    let listener = TcpListener::bind(options.addr).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let hosts = (!options.public).then(|| loopback_hosts(addr));
    let app = Arc::new(App {
        thumbs: Thumbnails::new(ctx.clone()),
        ctx,
        workers,
        hosts,
    });
    let router = Router::new()
        .route("/", get(index))
        .route("/api/state", get(api_state))
        .route("/api/dlq/replay", post(api_replay))
        .route("/thumbs/{job}/{batch}/{side}", get(thumbnail))
        .layer(middleware::from_fn_with_state(app.clone(), check_host))
        .with_state(app);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    Ok(UiServer { addr, task })
}

/// The `Host` header values a browser sends for a page on loopback `addr`.
fn loopback_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    vec![
        addr.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ]
}

async fn check_host(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(hosts) = &app.hosts {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !hosts.iter().any(|h| h == host) {
            return (StatusCode::FORBIDDEN, "unexpected Host header\n").into_response();
        }
    }
    next.run(request).await
}

/// An error as the script shows it: `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn snapshot(app: &App) -> Result<state::Snapshot, ApiError> {
    let workers = *app.workers.borrow();
    state::snapshot(&app.ctx, workers).await.map_err(internal)
}

async fn index(State(app): State<Arc<App>>) -> Result<Html<String>, ApiError> {
    Ok(Html(page::page(&snapshot(&app).await?)))
}

/// `GET /api/state`: the snapshot, and the parts of the page rendered from it.
async fn api_state(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Reply {
        #[serde(flatten)]
        snapshot: state::Snapshot,
        html: page::Fragments,
    }
    let snapshot = snapshot(&app).await?;
    let html = page::fragments(&snapshot);
    let mut response = Json(Reply { snapshot, html }).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The body of `POST /api/dlq/replay`: the filters of `stylefleet dlq replay` (empty means any),
/// a message id (the row's button), and whether only to count.
#[derive(Debug, Deserialize)]
struct ReplayRequest {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

impl ReplayRequest {
    fn filter(self) -> Result<Filter, ApiError> {
        let given = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let queue = given(self.queue);
        if let Some(q) = &queue
            && q != BATCHES
            && q != STITCH
        {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("no queue {q:?}: the queues are {BATCHES} and {STITCH}"),
            ));
        }
        Ok(Filter {
            queue,
            job: given(self.job),
            reason: given(self.reason),
            older_than: None,
            id: given(self.id),
        })
    }
}

/// `POST /api/dlq/replay`: what `stylefleet dlq replay` does, with the same filters.
async fn api_replay(
    State(app): State<Arc<App>>,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<BulkReport>, ApiError> {
    let dry_run = request.dry_run;
    let filter = request.filter()?;
    let report = dlq::bulk(
        app.ctx.queue.as_ref(),
        Some(&app.ctx.store),
        &filter,
        true,
        dry_run,
        |l| {
            if !dry_run {
                tracing::info!(queue = %l.queue, id = %l.id, "replayed from the web page");
            }
        },
    )
    .await
    .map_err(internal)?;
    Ok(Json(report))
}

/// `GET /thumbs/{job}/{batch}/{source.jpg|styled.jpg}`.
async fn thumbnail(
    State(app): State<Arc<App>>,
    Path((job, batch, side)): Path<(String, u32, String)>,
) -> Response {
    let not_found = |what: String| (StatusCode::NOT_FOUND, what).into_response();
    let Ok(job) = JobId::parse(&job) else {
        return not_found(format!("not a job id: {job}"));
    };
    let styled = match side.as_str() {
        "source.jpg" => false,
        "styled.jpg" => true,
        _ => return not_found(format!("no thumbnail {side}")),
    };
    match app.thumbs.get(&job, batch).await {
        Ok(pair) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            // A done chunk never changes: neither does its picture.
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=86400, immutable"),
            );
            let bytes = if styled { pair.styled } else { pair.source };
            (headers, bytes).into_response()
        }
        Err(ThumbError::NotFound(what)) => not_found(what),
        Err(e) => {
            tracing::warn!(%job, batch, error = %e, "cannot make a thumbnail");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(addr: &str, public: bool) -> UiOptions {
        UiOptions {
            addr: addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")),
            public,
        }
    }

    #[test]
    fn only_loopback_unless_public() {
        assert!(check_addr(&options("127.0.0.1:8080", false)).is_ok());
        assert!(check_addr(&options("[::1]:0", false)).is_ok());
        let err = check_addr(&options("0.0.0.0:8080", false))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("not a loopback address") && err.contains("--ui-public"),
            "{err}"
        );
        assert!(check_addr(&options("192.168.1.5:8080", false)).is_err());
        assert!(check_addr(&options("0.0.0.0:8080", true)).is_ok());
    }

    #[test]
    fn loopback_hosts_name_the_port() {
        let hosts = loopback_hosts("127.0.0.1:4321".parse().unwrap_or_else(|_| unreachable!()));
        assert!(hosts.contains(&"localhost:4321".to_owned()));
        assert!(hosts.contains(&"127.0.0.1:4321".to_owned()));
        assert!(!hosts.iter().any(|h| h.ends_with(":80")));
    }

    #[test]
    fn replay_filters_are_those_of_the_cli() {
        let request = ReplayRequest {
            queue: Some("stitch".into()),
            job: Some(" 0123456789abcdef ".into()),
            reason: Some(String::new()),
            id: None,
            dry_run: true,
        };
        let filter = request.filter().unwrap_or_else(|_| unreachable!());
        assert_eq!(filter.queue.as_deref(), Some("stitch"));
        assert_eq!(filter.job.as_deref(), Some("0123456789abcdef"));
        assert_eq!(filter.reason, None, "an empty field matches everything");
        let bad = ReplayRequest {
            queue: Some("nope".into()),
            job: None,
            reason: None,
            id: None,
            dry_run: false,
        };
        assert!(bad.filter().is_err());
    }
}
