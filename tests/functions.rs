//! The Azure Functions custom handler across processes, against Azurite and the embedded SQLite
//! queue (no Service Bus here):
//! - a distributed run: the handler (`stylefleet-functions`, on a free port) gets real-shaped
//!   Event Grid `BlobCreated` events in the custom handler envelope for a video uploaded to
//!   Azurite; two separate `stylefleet worker` processes style the batches; this test plays the
//!   Functions host for the `stitch` queue, POSTing the message to `/aggregator` and completing it
//!   on 2xx; the output blob in Azurite is frame-exact. A duplicate event, an old version's event
//!   arriving late and a second event for the same bytes still make one job.
//! - refusals: malformed requests get a 400 with the reason and enqueue nothing; events that do not
//!   start jobs get a 200 and enqueue nothing; the subscription handshake is answered.
//!
//! The handler binary belongs to another package of the workspace, so `CARGO_BIN_EXE_` does not
//! name it here: the test builds it with `cargo build --workspace --tests --bin
//! stylefleet-functions` into the same target folder. That is the selection `cargo test
//! --workspace` and `cargo nextest run --workspace` build, so features unify the same way and
//! the build is a no-op there; `-p stylefleet-functions` alone would unify them differently and
//! rebuild the shared dependencies a second time. The workers are this package's own
//! `stylefleet`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use stylefleet::queue::{BATCHES, Queue, STITCH, sqlite::QueueConfig};
use stylefleet::store::Store;
use support::azurite::Azurite;
use support::clips;

/// The handler's executable, built on first use into this test's target folder and profile.
fn functions_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // <target>/<profile>/deps/<this test>
            let exe = std::env::current_exe().expect("the test's own path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test runs from <target>/<profile>/deps");
            let target = profile_dir.parent().expect("a target folder");
            let mut build = Command::new(env!("CARGO"));
            build
                .args([
                    "build",
                    "--workspace",
                    "--tests",
                    "--bin",
                    "stylefleet-functions",
                ])
                .arg("--target-dir")
                .arg(target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building stylefleet-functions failed");
            let bin = profile_dir.join("stylefleet-functions");
            assert!(bin.exists(), "{} is missing after the build", bin.display());
            bin
        })
        .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A child process killed when dropped, its stderr kept in a file for failure messages.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, command: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{} exited early with {status}\n{}", self.name, self.log());
        }
    }

    /// SIGTERM, then wait up to `within` for the exit.
    fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The handler on a free port, with `env`, once it answers.
async fn start_handler(env: &[(String, String)], dir: &Path) -> (Proc, String) {
    let port = free_port();
    let mut command = Command::new(functions_binary());
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("RUST_LOG", "info");
    let mut proc = Proc::spawn("functions", &mut command, dir);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.assert_running();
        if client.get(&base).send().await.is_ok() {
            return (proc, base);
        }
        assert!(
            Instant::now() < deadline,
            "the handler did not answer\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs `body` to `url`; returns the status and the parsed answer (`Value::Null` when not JSON).
async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the handler answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An Event Grid `BlobCreated` event as the storage account emits it, in the custom handler
/// envelope the Functions host posts to `/splitter`.
fn blob_created(id: &str, url: &str, api: &str, etag: &str, size: u64) -> Value {
    json!({
        "Data": {
            "event": {
                "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/stylefleet/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
                "subject": subject_of(url),
                "eventType": "Microsoft.Storage.BlobCreated",
                "id": id,
                "data": {
                    "api": api,
                    "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
                    "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
                    "eTag": etag,
                    "contentType": "video/mp4",
                    "contentLength": size,
                    "blobType": "BlockBlob",
                    "url": url,
                    "sequencer": "00000000000004420000000000028963",
                    "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"}
                },
                "dataVersion": "",
                "metadataVersion": "1",
                "eventTime": "2025-01-01T00:00:00.0000000Z"
            }
        },
        "Metadata": {"sys": {"MethodName": "splitter", "UtcNow": "2025-01-01T00:00:01Z", "RandGuid": "8c1f"}}
    })
}

/// The subject Event Grid gives a blob URL: `/blobServices/default/containers/<c>/blobs/<name>`
/// (path-style URLs: `http://host:port/<account>/<container>/<name>`).
fn subject_of(url: &str) -> String {
    let parts: Vec<&str> = url.splitn(6, '/').collect();
    match parts.as_slice() {
        [_, _, _, _, container, name] => {
            format!("/blobServices/default/containers/{container}/blobs/{name}")
        }
        _ => String::new(),
    }
}

/// Uploads a file and returns its ETag as Event Grid reports it (no quotes).
async fn upload(store: &Store, path: &str, file: &Path) -> (String, u64) {
    let bytes = std::fs::read(file).expect("the clip");
    let size = bytes.len() as u64;
    store.put(path, bytes).await.expect("upload to Azurite");
    let meta = store.head(path).await.expect("head").expect("the blob");
    let etag = meta.e_tag.expect("Azurite gives ETags");
    (etag.trim_matches('"').to_owned(), size)
}

fn sqlite_queue(path: &Path) -> Arc<dyn Queue> {
    stylefleet::queue::open(path.to_str().expect("UTF-8 path"), QueueConfig::default())
        .expect("the SQLite queue")
}

async fn manifests(store: &Store) -> Vec<String> {
    store
        .list("jobs")
        .await
        .expect("list jobs/")
        .into_iter()
        .map(|m| m.location.to_string())
        .filter(|p| p.ends_with("/manifest.json"))
        .collect()
}

/// `(frames, width, height, has audio)` of a video, by ffprobe counting decoded frames.
fn ffprobe_counts(file: &Path) -> (u64, u64, u64, bool) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames,width,height",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let streams = v["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    let frames = video["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("a frame count");
    let audio = streams.iter().any(|s| s["codec_type"] == "audio");
    (
        frames,
        video["width"].as_u64().expect("width"),
        video["height"].as_u64().expect("height"),
        audio,
    )
}

async fn nothing_queued(queue: &dyn Queue, store: &Store) {
    assert_eq!(queue.backlog(BATCHES).await.unwrap(), 0);
    assert_eq!(queue.backlog(STITCH).await.unwrap(), 0);
    assert!(manifests(store).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_run_through_the_functions_handler() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start();
    const CONTAINER: &str = "stylefleet";
    azurite.create_container(CONTAINER).await;
    // In this process the container by its path-style URL; the children by `az://` and the
    // emulator variables, as a deployment names a store.
    let store = Store::open(&azurite.container_url(CONTAINER)).unwrap();
    let queue_file = dir.path().join("queue.sqlite");
    let queue = sqlite_queue(&queue_file);

    let mut env = azurite.env();
    env.extend([
        ("STYLEFLEET_STORE".to_owned(), format!("az://{CONTAINER}")),
        (
            "STYLEFLEET_QUEUE".to_owned(),
            queue_file.display().to_string(),
        ),
        ("STYLEFLEET_BATCH_FRAMES".to_owned(), "6".to_owned()),
        ("STYLEFLEET_LOCK_SECS".to_owned(), "20".to_owned()),
    ]);
    let functions_data = dir.path().join("functions");
    let mut handler_env = env.clone();
    handler_env.push((
        "STYLEFLEET_DATA".to_owned(),
        functions_data.display().to_string(),
    ));
    let (mut handler, base) = start_handler(&handler_env, dir.path()).await;

    // Two versions of one upload: the old one's event arrives after the new one's.
    let clips_dir = dir.path().join("clips");
    std::fs::create_dir_all(&clips_dir).unwrap();
    let old = clips::cfr_with_aac(&clips_dir, 64, 48, 12, 12);
    let new = clips::cfr_with_aac(&clips_dir, 96, 64, 20, 10);
    let path = "input/yellow-woodcut/clip.mp4";
    let url = format!("{}/{path}", azurite.container_url(CONTAINER));
    let (old_etag, old_size) = upload(&store, path, &old).await;
    let (new_etag, new_size) = upload(&store, path, &new).await;
    assert_ne!(old_etag, new_etag);

    let splitter = format!("{base}/splitter");
    let action = |answer: &Value| answer["ReturnValue"]["events"][0]["action"].clone();

    let (status, answer) = post(
        &splitter,
        blob_created("ev-new", &url, "PutBlob", &new_etag, new_size).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}\n{}", handler.log());
    assert_eq!(action(&answer), "planned", "{answer}");
    let job = answer["ReturnValue"]["events"][0]["job"]
        .as_str()
        .expect("the job id")
        .to_owned();
    assert!(
        answer["Logs"][0].as_str().unwrap().contains(&job),
        "{answer}"
    );
    let batches = queue.backlog(BATCHES).await.unwrap();
    assert_eq!(batches, 4, "20 frames in batches of 6");

    // Event Grid redelivers the same event.
    let (status, answer) = post(
        &splitter,
        blob_created("ev-new", &url, "PutBlob", &new_etag, new_size).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(action(&answer), "duplicate", "{answer}");
    // The first upload's event arrives last.
    let (status, answer) = post(
        &splitter,
        blob_created("ev-old", &url, "PutBlob", &old_etag, old_size).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(action(&answer), "stale", "{answer}");
    // Another event for the same bytes (a copy onto itself, say) finds the same job.
    let (status, answer) = post(
        &splitter,
        blob_created("ev-copy", &url, "CopyBlob", &new_etag, new_size).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(action(&answer), "existing", "{answer}");
    assert_eq!(answer["ReturnValue"]["events"][0]["job"], job.as_str());
    assert_eq!(
        manifests(&store).await,
        vec![format!("jobs/{job}/manifest.json")],
        "one job for all four events"
    );

    // Two separate worker processes.
    let stylefleet = env!("CARGO_BIN_EXE_stylefleet");
    let mut workers: Vec<Proc> = (0..2)
        .map(|i| {
            let mut command = Command::new(stylefleet);
            command
                .args(["worker", "--device", "cpu", "--grace", "5"])
                .arg("--data")
                .arg(dir.path().join(format!("worker{i}")))
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("RAYON_NUM_THREADS", "1")
                .env("RUST_LOG", "info");
            Proc::spawn(&format!("worker{i}"), &mut command, dir.path())
        })
        .collect();

    // This test is the Functions host of the aggregator: stitch messages go to /aggregator.
    let aggregator = format!("{base}/aggregator");
    let deadline = Instant::now() + Duration::from_secs(300);
    let output = loop {
        for w in &mut workers {
            w.assert_running();
        }
        handler.assert_running();
        let logs = || {
            workers
                .iter()
                .map(Proc::log)
                .chain([handler.log()])
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(Instant::now() < deadline, "no output in time\n{}", logs());
        let deliveries = queue
            .receive(STITCH, 1, Duration::from_secs(1))
            .await
            .unwrap();
        let Some(delivery) = deliveries.into_iter().next() else {
            continue;
        };
        let envelope = json!({
            "Data": {"message": String::from_utf8(delivery.body.clone()).unwrap()},
            "Metadata": {
                "MessageId": delivery.id,
                "DeliveryCount": delivery.delivery_count.to_string(),
                "sys": {"MethodName": "aggregator"}
            }
        });
        let (status, answer) = post(&aggregator, envelope.to_string()).await;
        if (200..300).contains(&status) {
            queue.complete(&delivery).await.unwrap();
            assert_eq!(answer["ReturnValue"]["outcome"], "complete", "{answer}");
            break answer["ReturnValue"]["output"]
                .as_str()
                .expect("the output path")
                .to_owned();
        }
        queue.abandon(&delivery, None).await.unwrap();
    };
    assert_eq!(output, "output/yellow-woodcut/clip.mp4");

    // Exactly one output, and it is the new upload, frame for frame, with its audio.
    let outputs = store.list("output").await.unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let local = dir.path().join("output.mp4");
    store.download(&output, &local).await.unwrap();
    let (src_frames, src_w, src_h, src_audio) = ffprobe_counts(&new);
    assert_eq!((src_frames, src_w, src_h, src_audio), (20, 96, 64, true));
    assert_eq!(
        ffprobe_counts(&local),
        (src_frames, src_w, src_h, src_audio)
    );
    let done = store.list(&format!("jobs/{job}/done")).await.unwrap();
    assert_eq!(done.len(), 4);
    // Every batch was styled by a worker process, none by this test.
    let workers_seen: std::collections::HashSet<String> = {
        let mut seen = std::collections::HashSet::new();
        for m in &done {
            let bytes = store.get(m.location.as_ref()).await.unwrap().unwrap();
            let marker: Value = serde_json::from_slice(&bytes).unwrap();
            seen.insert(marker["worker"].as_str().unwrap().to_owned());
        }
        seen
    };
    assert!(
        !workers_seen.is_empty() && workers_seen.len() <= 2,
        "{workers_seen:?}"
    );
    assert_eq!(queue.backlog(BATCHES).await.unwrap(), 0);
    assert_eq!(queue.backlog(STITCH).await.unwrap(), 0);

    // A stitch redelivered after success is answered 200 and writes nothing new.
    let replay = json!({
        "Data": {"message": json!({"v": 1, "job": job}).to_string()},
        "Metadata": {"MessageId": format!("{job}:stitch"), "DeliveryCount": "2"}
    });
    let (status, answer) = post(&aggregator, replay.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(store.list("output").await.unwrap().len(), 1);

    // The operator's view of the same configuration: `status` and `dlq` read the Azure store.
    let cli = |args: &[&str]| {
        let out = Command::new(stylefleet)
            .args(args)
            .arg("--data")
            .arg(dir.path().join("cli"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stylefleet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let status = cli(&["status", "--json"]);
    let jobs = status.as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{status}");
    assert_eq!(jobs[0]["job"], job.as_str());
    assert_eq!(jobs[0]["state"], "done", "{status}");
    assert_eq!(jobs[0]["output"], output.as_str());
    assert_eq!(jobs[0]["frames_done"], 20);
    assert_eq!(cli(&["dlq", "list", "--json"]), json!([]));

    for w in &mut workers {
        assert!(
            w.terminate(Duration::from_secs(20)).is_some(),
            "a worker did not stop on SIGTERM\n{}",
            w.log()
        );
    }
    assert!(handler.terminate(Duration::from_secs(10)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_ignored_events_enqueue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start();
    for container in stylefleet::azure::LAYOUT_CONTAINERS {
        azurite.create_container(container).await;
    }
    // The deployment's layout: the store is the account, `input` a container.
    let account = azurite.account_url();
    let store = Store::open(&account).unwrap();
    let queue_file = dir.path().join("queue.sqlite");
    let queue = sqlite_queue(&queue_file);
    let env = vec![
        ("STYLEFLEET_STORE".to_owned(), account.clone()),
        (
            "STYLEFLEET_QUEUE".to_owned(),
            queue_file.display().to_string(),
        ),
        (
            "STYLEFLEET_DATA".to_owned(),
            dir.path().join("functions").display().to_string(),
        ),
    ];
    let (mut handler, base) = start_handler(&env, dir.path()).await;
    let splitter = format!("{base}/splitter");
    let aggregator = format!("{base}/aggregator");

    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 6, 12);
    let (etag, size) = upload(&store, "input/yellow-woodcut/a.mp4", &clip).await;
    upload(&store, "output/yellow-woodcut/a.mp4", &clip).await;
    let url = format!("{account}/input/yellow-woodcut/a.mp4");

    // Malformed: 400 with the reason, nothing planned or queued.
    let no_url = json!({"Data": {"event": {
        "id": "m1", "eventType": "Microsoft.Storage.BlobCreated",
        "subject": "/blobServices/default/containers/input/blobs/yellow-woodcut/a.mp4",
        "data": {"api": "PutBlob", "eTag": etag}
    }}});
    let bad_url = blob_created(
        "m2",
        "ftp://elsewhere/input/x/a.mp4",
        "PutBlob",
        &etag,
        size,
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (&splitter, "this is not json".into(), "not JSON"),
        (
            &splitter,
            json!({"Metadata": {}}).to_string(),
            "Data is missing",
        ),
        (
            &splitter,
            json!([{"id": "x"}]).to_string(),
            "not an invocation",
        ),
        (&splitter, json!({"Data": {}}).to_string(), "\"event\""),
        (
            &splitter,
            json!({"Data": {"event": {"eventType": "Microsoft.Storage.BlobCreated"}}}).to_string(),
            "no id",
        ),
        (&splitter, no_url.to_string(), "data.url"),
        (&splitter, bad_url.to_string(), "not an http(s) URL"),
        (
            &aggregator,
            json!({"Data": {"message": "garbage"}}).to_string(),
            "MalformedMessage",
        ),
        (
            &aggregator,
            json!({"Data": {"message": {"v": 2, "job": "0123456789abcdef"}}}).to_string(),
            "UnknownMessageVersion",
        ),
        (&aggregator, "{".into(), "not JSON"),
    ];
    for (url, body, reason) in cases {
        let (status, answer) = post(url, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let error = answer["ReturnValue"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{body} -> {answer}");
        assert!(
            answer["Logs"][0]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{answer}"
        );
        nothing_queued(queue.as_ref(), &store).await;
    }

    // Not for us: 200, ignored with a reason, nothing queued.
    let mut deleted = blob_created("i1", &url, "DeleteBlob", &etag, size);
    deleted["Data"]["event"]["eventType"] = json!("Microsoft.Storage.BlobDeleted");
    let ignored = [
        deleted,
        blob_created("i2", &url, "PutBlock", &etag, size),
        blob_created(
            "i3",
            &format!("{account}/output/yellow-woodcut/a.mp4"),
            "PutBlob",
            &etag,
            size,
        ),
        blob_created(
            "i4",
            &format!("{account}/jobs/0123456789abcdef/chunks/00000.mp4"),
            "PutBlob",
            &etag,
            size,
        ),
        blob_created(
            "i5",
            &format!("{account}/input/a.mp4"),
            "PutBlob",
            &etag,
            size,
        ),
    ];
    for event in ignored {
        let (status, answer) = post(&splitter, event.to_string()).await;
        assert_eq!(status, 200, "{event} -> {answer}");
        assert_eq!(
            answer["ReturnValue"]["events"][0]["action"], "ignored",
            "{answer}"
        );
        assert!(
            answer["ReturnValue"]["events"][0]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{answer}"
        );
        nothing_queued(queue.as_ref(), &store).await;
    }

    // The subscription handshake.
    let validation = json!({"Data": {"event": {
        "id": "v1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "subject": "", "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
        "validationUrl": "https://rp-eastus2.eventgrid.azure.net/eventsubscriptions/x/validate?id=512d38b6"},
        "dataVersion": "2", "metadataVersion": "1", "eventTime": "2025-01-01T00:00:00Z"
    }}});
    let (status, answer) = post(&splitter, validation.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["ReturnValue"]["validationResponse"],
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    );
    nothing_queued(queue.as_ref(), &store).await;

    // A stitch for a job nobody planned ends (200, the reason logged) instead of looping.
    let unknown =
        json!({"Data": {"message": json!({"v": 1, "job": "0123456789abcdef"}).to_string()}});
    let (status, answer) = post(&aggregator, unknown.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ReturnValue"]["reason"], "UnknownJob", "{answer}");
    nothing_queued(queue.as_ref(), &store).await;

    // An unknown function.
    let (status, _) = post(&format!("{base}/resizer"), "{}").await;
    assert_eq!(status, 404);

    // The same handler does plan a well-formed upload: the zeros above were not for lack of a way
    // to enqueue.
    let (status, answer) = post(
        &splitter,
        blob_created("ok", &url, "PutBlockList", &etag, size).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}\n{}", handler.log());
    assert_eq!(
        answer["ReturnValue"]["events"][0]["action"], "planned",
        "{answer}"
    );
    assert_eq!(queue.backlog(BATCHES).await.unwrap(), 1);
    assert_eq!(manifests(&store).await.len(), 1);
    assert!(handler.terminate(Duration::from_secs(10)).is_some());
}
