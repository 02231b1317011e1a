//! The HTTP server the Functions host talks to: `POST /splitter`, named after the one function
//! folder, answering in the custom handler protocol. (The aggregator is not a function: see
//! [`crate::aggregator`].)
//!
//! Status codes: 200 when the invocation succeeded (including events it chose to ignore), 400
//! with the reason when the request is malformed (nothing is planned or enqueued for it), 500
//! with the reason when a transient failure should be retried by the trigger.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use stylefleet::stage::Context;

use crate::event::Layout;
use crate::protocol::InvocationResponse;
use crate::splitter::{self, SplitterError};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct App {
    /// The stage context (stores and queue).
    pub ctx: Context,
    /// How event blob URLs map to store paths.
    pub layout: Layout,
}

impl App {
    /// An app over `ctx`, its layout taken from the store's spec.
    pub fn new(ctx: Context) -> Self {
        let layout = Layout::of_store(ctx.store.spec());
        Self { ctx, layout }
    }
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { "stylefleet-functions" }))
        .route("/splitter", post(splitter_route))
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "no such function: this handler serves POST /splitter".into(),
            )
        })
        .with_state(app)
}

/// Serves on `listener` until `shutdown` is cancelled; requests in flight are finished.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn reply(status: StatusCode, response: InvocationResponse) -> Response {
    (status, axum::Json(response)).into_response()
}

/// A failed invocation: the reason in the log lines and the return value.
fn refuse(status: StatusCode, reason: String) -> Response {
    if status.is_server_error() {
        tracing::warn!(%status, "{reason}");
    } else {
        tracing::info!(%status, "refused: {reason}");
    }
    let response = InvocationResponse {
        logs: vec![format!("refused: {reason}")],
        return_value: json!({ "error": reason }),
        ..Default::default()
    };
    reply(status, response)
}

async fn splitter_route(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match splitter::handle(&app.ctx, &app.layout, &body).await {
        Ok(response) => reply(StatusCode::OK, response),
        Err(e @ (SplitterError::Request(_) | SplitterError::Event(_))) => {
            refuse(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e @ SplitterError::Transient { .. }) => {
            refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
