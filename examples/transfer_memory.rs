//! One transfer between a file and a store, and the peak memory of the process that made it: the
//! measuring half of `scripts/bench-transfer-memory.sh`, which runs it once per measurement (a
//! peak is per process).
//!
//! ```text
//! transfer_memory upload       <store> <file> <path>   # Store::upload, create-only
//! transfer_memory overwrite    <store> <file> <path>   # Store::upload, overwrite
//! transfer_memory whole-upload <store> <file> <path>   # the way before: read it whole, put_create
//! transfer_memory download     <store> <path> <file>   # Store::download
//! ```
//!
//! `<store>` is anything `Store::open` takes (a folder, `az://<container>` with the Azure
//! variables set). Prints one line: `<mode> bytes=<n> seconds=<s> rss_before_kib=<k>
//! peak_rss_kib=<k>`, the peak being the kernel's high-water mark (`VmHWM`).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use stylefleet::store::Store;

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("a bad line: {line}"))?;
    Ok(kib.parse()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, store, a, b] = &args[..] else {
        bail!(
            "usage: transfer_memory <upload|overwrite|whole-upload|download> <store> <from> <to>"
        );
    };
    let store = Store::open(store)?;
    let before = status_kib("VmRSS:")?;
    let started = Instant::now();
    let bytes = match mode.as_str() {
        "upload" | "overwrite" => {
            let created = store.upload(Path::new(a), b, mode == "upload").await?;
            anyhow::ensure!(created, "{b} already exists in the store");
            std::fs::metadata(a)?.len()
        }
        "whole-upload" => {
            let bytes = tokio::fs::read(a).await?;
            let len = bytes.len() as u64;
            anyhow::ensure!(
                store.put_create(b, bytes).await?,
                "{b} already exists in the store"
            );
            len
        }
        "download" => {
            store.download(a, Path::new(b)).await?;
            std::fs::metadata(b)?.len()
        }
        other => bail!("unknown mode {other}"),
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{mode} bytes={bytes} seconds={seconds:.1} rss_before_kib={before} peak_rss_kib={}",
        status_kib("VmHWM:")?
    );
    Ok(())
}
