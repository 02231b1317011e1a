//! stylefleet-functions: the two serverless stages of the pipeline on Azure, in one executable
//! that links the pipeline without the style stage (no Candle, so a short cold start):
//!
//! - the **splitter**, as an Azure Functions custom handler: the Functions host starts this binary,
//!   passes `FUNCTIONS_CUSTOMHANDLER_PORT`, and forwards each Event Grid event to it over HTTP;
//! - the **aggregator**, as a consumer of the `stitch` queue (`stylefleet-functions aggregate`, a
//!   CPU container scaled from zero by KEDA). Not a function, because a custom handler cannot
//!   dead-letter a message: see [`aggregator`].
//!
//! # Layout
//!
//! - [`protocol`]: the custom handler request and response.
//! - [`event`]: Event Grid events, the filter that picks uploads, blob URL to store path.
//! - [`splitter`]: Event Grid `BlobCreated` -> a planned job (deduplicated, order-proof).
//! - [`server`]: the HTTP routes and status codes.
//! - [`aggregator`]: the `stitch` consumer: the shared consume loop around the stitch stage, which
//!   settles each message itself (dead-letters with the reason, renews the lock, drains).
//! - [`health`]: the aggregator's `/healthz`.
//!
//! ffmpeg and ffprobe: the stages run them from beside this executable when they are there, else
//! from `PATH`. The Flex Consumption image has neither, so the package carries static builds next
//! to `stylefleet-functions` (see `functions/README.md`).

pub mod aggregator;
pub mod event;
pub mod health;
pub mod protocol;
pub mod server;
pub mod splitter;
