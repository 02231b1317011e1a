#![allow(clippy::unwrap_used)]
//! The whole pipeline with Azurite as the blob store: `stylefleet process --store az://<container>`
//! configured by object_store's emulator variables, the SQLite queue, worker processes. The output
//! must be frame-exact with its audio copied, and every blob of the job must be in Azurite, none on
//! the local disk.

mod support;

use std::process::Command;

use stylefleet::store::Store;
use support::azurite::{Azurite, check};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_with_azurite_as_the_store() {
    let azurite = Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = support::clips::cfr_with_aac(dir.path(), 96, 64, 30, 25);
    let data = dir.path().join("data");
    let out = dir.path().join("styled.mp4");

    // The container does not exist yet: the store creates it.
    let status = Command::new(env!("CARGO_BIN_EXE_stylefleet"))
        .envs(azurite.env())
        .args(["process", clip.to_str().unwrap(), "--style", "0"])
        .args(["--workers", "2", "--batch-frames", "8", "-o"])
        .arg(&out)
        .arg("--data")
        .arg(&data)
        .args(["--store", "az://pipeline"])
        .status()
        .unwrap();
    assert!(status.success(), "stylefleet process: {status}");
    check::frame_exact(&clip, &out);

    // Everything the job wrote is in the container (seen through a path-style URL, without the
    // emulator variables); the data folder holds only the queue and scratch space.
    let store = Store::open(&azurite.container_url("pipeline")).unwrap();
    let outputs = store.list("output").await.unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let blob = store
        .get(outputs[0].location.as_ref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        blob,
        std::fs::read(&out).unwrap(),
        "the output blob is the file"
    );
    let jobs = store.list("jobs").await.unwrap();
    let names: Vec<String> = jobs.iter().map(|m| m.location.to_string()).collect();
    let manifests: Vec<_> = names
        .iter()
        .filter(|n| n.ends_with("/manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 1, "{names:?}");
    let job = manifests[0]
        .trim_start_matches("jobs/")
        .trim_end_matches("/manifest.json");
    // 30 frames in batches of 8: four batches, four create-only done markers.
    let done = names
        .iter()
        .filter(|n| n.starts_with(&format!("jobs/{job}/done/")))
        .count();
    assert_eq!(done, 4, "{names:?}");
    assert!(
        names.contains(&format!("jobs/{job}/status.json")),
        "{names:?}"
    );
    let source = store.list("process").await.unwrap();
    assert_eq!(source.len(), 1, "the uploaded source: {source:?}");
    for local in ["output", "jobs", "process", "logs"] {
        assert!(!data.join(local).exists(), "{local}/ was written locally");
    }
}
