//! stylefleet: neural style transfer over every frame of a video, in parallel, frame-exact, with
//! its audio; on one machine (a folder, an SQLite queue, worker processes) or on Azure (Blob
//! Storage, Service Bus, Functions, Container Apps). The stages do not know where they run: only
//! the adapters differ.
//!
//! # Layout
//!
//! - [`job`]: job ids, the manifest (the plan), markers and the status snapshot, and their paths.
//! - [`message`]: the `batch` and `stitch` messages.
//! - [`store`]: blob storage through `object_store` (local folder, Azure); [`store::azure`]: its
//!   Azure side, with [`store::azure::sas`] (short-lived single-blob URLs for outside users).
//! - [`queue`]: the peek-lock queue trait, the SQLite and Service Bus backends, the conformance
//!   suite (feature `conformance`, for tests).
//! - [`media`]: ffprobe, exact frame-range decode, chunk encode, stitch, verify.
//! - [`stage`]: split, style (feature `style`), aggregate; [`consume`]: the receive/renew/settle loop.
//! - [`fleet`]: the embedded fleet: watcher, worker processes, autoscaler, `process` for one video;
//!   [`fleet::ui`]: the live web page of `up --ui` (jobs, frames, failures, dead-letter replay).
//! - [`inspect`] and [`dlq`]: what `status` and `dlq` show and do; [`presence`]: which consume
//!   loops run now (how `status` tells an interrupted job); [`clean`]: removing finished jobs.
//! - [`settings`]: batch size, limits, encoder, retry policy, temporal stabilisation.
//! - [`temporal`]: flow-guided temporal stabilisation of the styled frames (DIS optical flow,
//!   reliability, the recursive blend), run by the aggregator in one pass at stitch time.
//! - [`setup`]: the [`stage::Context`] built from a [`setup::Location`] (flags or environment), shared
//!   by the CLI, the Functions app and the worker container.
//! - [`access`]: the deployment's access matrix (`infra/access.json`) and the guard that holds a
//!   process to its identity's grants in tests (`STYLEFLEET_IDENTITY`).
//! - [`fault`]: named fault points that tests arm through the environment (crash or fail at a step).
//! - [`telemetry`]: OpenTelemetry traces and metrics (OTLP, Application Insights, the
//!   Prometheus text of `/metrics`), configured from the standard environment;
//!   [`telemetry::metrics`]: the instruments.
//! - [`lifecycle`]: `main` set-up (arguments, logging, runtime) and shutdown signals, shared by
//!   the same three executables; [`terminal`]: progress bars and log lines sharing stderr, colour
//!   only on a terminal, stdout that may be a closed pipe.
#![warn(missing_docs)]

pub mod access;
pub mod clean;
pub mod consume;
pub mod dlq;
pub mod fault;
pub mod fleet;
pub mod inspect;
pub mod job;
pub mod lifecycle;
pub mod media;
pub mod message;
pub mod presence;
pub mod queue;
pub mod settings;
pub mod setup;
pub mod stage;
pub mod store;
pub mod telemetry;
pub mod temporal;
pub mod terminal;
