//! stylefleet-functions: the Azure Functions custom handler that runs the splitter and the
//! aggregator. The Functions host starts this binary, passes `FUNCTIONS_CUSTOMHANDLER_PORT`, and
//! forwards each trigger to it over HTTP. It links the pipeline without the style stage, so no
//! Candle and a short cold start.
//!
//! # Layout
//!
//! - [`protocol`]: the custom handler request and response.
//! - [`event`]: Event Grid events, the filter that picks uploads, blob URL to store path.
//! - [`splitter`]: Event Grid `BlobCreated` -> a planned job (deduplicated, order-proof).
//! - [`aggregator`]: Service Bus `stitch` -> the output, with the host settling the message.
//! - [`server`]: the HTTP routes and status codes.
//!
//! ffmpeg and ffprobe: the stages run them from beside this executable when they are there, else
//! from `PATH`. The Flex Consumption image has neither, so the package carries static builds next
//! to `stylefleet-functions` (see `functions/README.md`).

pub mod aggregator;
pub mod event;
pub mod protocol;
pub mod server;
pub mod splitter;
