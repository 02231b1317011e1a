//! The Azure side of the pipeline across processes, against Azurite and the embedded SQLite queue
//! (no Service Bus here): the Functions custom handler (`stylefleet-functions`, the splitter) and
//! the aggregator container's stitch consumer (`stylefleet-functions aggregate`).
//! - a distributed run: the handler (on a free port) gets real-shaped Event Grid `BlobCreated`
//!   events in the custom handler envelope for a video uploaded to Azurite; two separate
//!   `stylefleet worker` processes style the batches; the aggregator process consumes `stitch`
//!   with the shared consume loop; the output blob in Azurite is frame-exact. A duplicate event,
//!   an old version's event arriving late and a second event for the same bytes still make one
//!   job, and a stitch redelivered after success writes nothing new.
//! - a stitch that can never succeed (a done marker whose frame count disagrees with the plan)
//!   ends in the `stitch` dead-letter queue with its reason on its first delivery, the job
//!   `failed` with the same reason; malformed and unknown stitch messages too; once the cause is
//!   gone, `stylefleet dlq replay` revives the job to a verified output. This is why the
//!   aggregator is a queue consumer and not a function: a custom handler cannot dead-letter.
//! - refusals: malformed requests get a 400 with the reason and enqueue nothing; events that do not
//!   start jobs get a 200 and enqueue nothing; the subscription handshake is answered; there is no
//!   `/aggregator` function any more.
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

use stylefleet::queue::{BATCHES, DeadLetter, OutgoingMessage, Queue, STITCH, sqlite::QueueConfig};
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
    start_handler_from(&functions_binary(), env, dir).await
}

/// [`start_handler`] with the handler executable at `binary`.
async fn start_handler_from(binary: &Path, env: &[(String, String)], dir: &Path) -> (Proc, String) {
    let port = free_port();
    let mut command = Command::new(binary);
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

/// The aggregator (`stylefleet-functions aggregate`) with `env`, its health endpoint on a free
/// port; returned once `/healthz` says it takes work, with the endpoint's URL.
async fn start_aggregator(env: &[(String, String)], dir: &Path) -> (Proc, String) {
    let port = free_port();
    let mut command = Command::new(functions_binary());
    command
        .arg("aggregate")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("STYLEFLEET_DATA", dir.join("aggregator"))
        .env("STYLEFLEET_HEALTH_PORT", port.to_string())
        .env("RUST_LOG", "info");
    let mut proc = Proc::spawn("aggregator", &mut command, dir);
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.assert_running();
        if let Some(health) = get_json(&url).await
            && health["state"] == "ready"
        {
            return (proc, url);
        }
        assert!(
            Instant::now() < deadline,
            "the aggregator did not get ready\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GETs `url` as JSON; `None` when it does not answer (yet).
async fn get_json(url: &str) -> Option<Value> {
    let response = reqwest::Client::new().get(url).send().await.ok()?;
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// A job's `status.json`, once there.
async fn job_status(store: &Store, job: &str) -> Option<Value> {
    let bytes = store
        .get(&format!("jobs/{job}/status.json"))
        .await
        .expect("read status.json")?;
    Some(serde_json::from_slice(&bytes).expect("status.json is JSON"))
}

/// Every dead letter of the `stitch` queue.
async fn stitch_dead_letters(queue: &dyn Queue) -> Vec<DeadLetter> {
    queue
        .peek_dead_letters(STITCH, 0, 100)
        .await
        .expect("peek the stitch dead letters")
}

/// Polls `probe` every 200 ms until it gives a value; panics with `what` and `logs()` after
/// `secs`.
async fn eventually<T, F, Fut>(what: &str, secs: u64, logs: impl Fn() -> String, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
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

    // The aggregator container's process consumes the stitch queue the last batch posts to.
    let (mut aggregator, health) = start_aggregator(&env, dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        for w in &mut workers {
            w.assert_running();
        }
        handler.assert_running();
        aggregator.assert_running();
        if let Some(status) = job_status(&store, &job).await
            && (status["state"] == "done" || status["state"] == "failed")
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no output in time\n{}",
            [&workers[0], &workers[1], &handler, &aggregator]
                .iter()
                .map(|p| p.log())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["state"], "done", "{status}\n{}", aggregator.log());
    let output = status["output"]
        .as_str()
        .expect("the output path")
        .to_owned();
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

    // A stitch delivered again after success (a duplicate post, a replay) completes and writes
    // nothing new.
    queue
        .send(
            STITCH,
            vec![OutgoingMessage::new(
                format!("{job}:stitch"),
                json!({"v": 1, "job": job}).to_string(),
            )],
        )
        .await
        .unwrap();
    let seen = eventually(
        "the second stitch",
        60,
        || aggregator.log(),
        || async {
            get_json(&health)
                .await
                .filter(|h| h["stitched"] == 2 && h["current"].is_null())
        },
    )
    .await;
    assert_eq!(seen["dead_lettered"], 0, "{seen}");
    assert_eq!(store.list("output").await.unwrap().len(), 1);
    assert_eq!(queue.backlog(STITCH).await.unwrap(), 0);

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
    let stopped = aggregator.terminate(Duration::from_secs(15));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "the aggregator did not drain on SIGTERM: {stopped:?}\n{}",
        aggregator.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_ignored_events_enqueue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start();
    for container in stylefleet::store::azure::LAYOUT_CONTAINERS {
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

    // Unknown functions, the aggregator among them: it consumes `stitch` itself.
    for name in ["resizer", "aggregator"] {
        let (status, answer) = post(&format!("{base}/{name}"), "{}").await;
        assert_eq!(status, 404, "{answer}");
        assert!(
            answer["ReturnValue"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("no such function")),
            "{answer}"
        );
    }

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

/// Why the aggregator is a queue consumer and not a function: a stitch that can never succeed
/// must end in the `stitch` dead-letter queue with its reason, where a replay revives it. A custom
/// handler can only complete (2xx) or abandon; the consume loop dead-letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stitch_that_cannot_succeed_is_dead_lettered_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start();
    for container in stylefleet::store::azure::LAYOUT_CONTAINERS {
        azurite.create_container(container).await;
    }
    // The deployment's layout: the store is the account, each top-level folder a container.
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
        ("STYLEFLEET_BATCH_FRAMES".to_owned(), "3".to_owned()),
        // As the deployment tells the aggregator the stitch queue's count: well above one, so a
        // dead letter on the first delivery is the stage's decision, not the queue running out.
        ("STYLEFLEET_MAX_DELIVERIES".to_owned(), "10".to_owned()),
    ];
    let mut handler_env = env.clone();
    handler_env.push((
        "STYLEFLEET_DATA".to_owned(),
        dir.path().join("functions").display().to_string(),
    ));
    let (mut handler, base) = start_handler(&handler_env, dir.path()).await;

    // A job planned by the splitter and styled by a worker, whose last batch posts the stitch.
    let clip = clips::cfr_with_aac(dir.path(), 64, 48, 6, 12);
    let path = "input/yellow-woodcut/six.mp4";
    let (etag, size) = upload(&store, path, &clip).await;
    let (status, answer) = post(
        &format!("{base}/splitter"),
        blob_created(
            "ev-six",
            &format!("{account}/{path}"),
            "PutBlob",
            &etag,
            size,
        )
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}\n{}", handler.log());
    let job = answer["ReturnValue"]["events"][0]["job"]
        .as_str()
        .expect("the job id")
        .to_owned();
    let stylefleet = env!("CARGO_BIN_EXE_stylefleet");
    let out = Command::new(stylefleet)
        .args(["worker", "--device", "cpu", "--exit-when-idle", "2"])
        .arg("--data")
        .arg(dir.path().join("worker"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(queue.backlog(BATCHES).await.unwrap(), 0);
    assert_eq!(
        queue.backlog(STITCH).await.unwrap(),
        1,
        "the last batch posts the stitch"
    );

    // The cause: a done marker that disagrees with the plan, which no retry can change.
    let marker_path = format!("jobs/{job}/done/00000.json");
    let marker_bytes = store
        .get(&marker_path)
        .await
        .unwrap()
        .expect("batch 0 is done");
    let mut marker: Value = serde_json::from_slice(&marker_bytes).unwrap();
    assert_eq!(marker["frames"], 3, "{marker}");
    marker["frames"] = json!(4);
    store
        .put(&marker_path, serde_json::to_vec(&marker).unwrap())
        .await
        .unwrap();
    // And stitch messages that are not for any job: each must end, with its own reason.
    let unknown_job = "0123456789abcdef";
    let poison = [
        ("poison:garbage", "garbage".to_owned(), "MalformedMessage"),
        (
            "poison:v2",
            json!({"v": 2, "job": unknown_job}).to_string(),
            "UnknownMessageVersion",
        ),
        (
            "poison:unknown-job",
            json!({"v": 1, "job": unknown_job}).to_string(),
            "UnknownJob",
        ),
    ];
    queue
        .send(
            STITCH,
            poison
                .iter()
                .map(|(id, body, _)| OutgoingMessage::new(*id, body.clone()))
                .collect(),
        )
        .await
        .unwrap();

    let (mut aggregator, health) = start_aggregator(&env, dir.path()).await;
    let dead = eventually(
        "four stitch dead letters",
        60,
        || aggregator.log(),
        || async {
            let dead = stitch_dead_letters(queue.as_ref()).await;
            (dead.len() >= 4).then_some(dead)
        },
    )
    .await;
    aggregator.assert_running();
    assert_eq!(dead.len(), 4, "{dead:#?}");
    let stitch_id = format!("{job}:stitch");
    let ours = dead
        .iter()
        .find(|d| d.id == stitch_id)
        .unwrap_or_else(|| panic!("no dead letter {stitch_id}: {dead:#?}"));
    assert_eq!(ours.info.reason, "PermanentFailure", "{ours:#?}");
    assert!(
        ours.info
            .description
            .contains("batch 0 has 4 frames, the plan says 3"),
        "{ours:#?}"
    );
    assert_eq!(
        ours.delivery_count, 1,
        "dead-lettered on its first delivery"
    );
    for (id, _, reason) in &poison {
        let d = dead
            .iter()
            .find(|d| d.id == *id)
            .unwrap_or_else(|| panic!("no dead letter {id}: {dead:#?}"));
        assert_eq!(d.info.reason, *reason, "{d:#?}");
        assert_eq!(d.delivery_count, 1, "{d:#?}");
    }
    assert_eq!(queue.backlog(STITCH).await.unwrap(), 0);
    // The job failed with the same reason, visibly, and wrote nothing.
    let status = job_status(&store, &job).await.expect("a status");
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["reason"]
            .as_str()
            .is_some_and(|r| r.contains("batch 0 has 4 frames, the plan says 3")),
        "{status}"
    );
    assert!(store.list("output").await.unwrap().is_empty());
    let seen = get_json(&health)
        .await
        .expect("the health endpoint answers");
    assert_eq!(
        (
            &seen["state"],
            &seen["dead_lettered"],
            &seen["stitched"],
            &seen["retried"]
        ),
        (&json!("ready"), &json!(4), &json!(0), &json!(0)),
        "{seen}"
    );

    // The cause gone, the operator replays the job's dead letter and the job completes.
    store.put(&marker_path, marker_bytes).await.unwrap();
    let out = Command::new(stylefleet)
        .args(["dlq", "replay", "--job", &job])
        .arg("--data")
        .arg(dir.path().join("cli"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stylefleet dlq replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = eventually(
        "the replayed job done",
        120,
        || aggregator.log(),
        || async {
            job_status(&store, &job)
                .await
                .filter(|s| s["state"] == "done")
        },
    )
    .await;
    let output = status["output"].as_str().expect("the output path");
    assert_eq!(output, "output/yellow-woodcut/six.mp4");
    let local = dir.path().join("six.mp4");
    store.download(output, &local).await.unwrap();
    assert_eq!(ffprobe_counts(&local), (6, 64, 48, true));
    let left: Vec<String> = stitch_dead_letters(queue.as_ref())
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left.len(), 3, "only the poison stays: {left:?}");
    assert!(!left.contains(&stitch_id), "{left:?}");

    let stopped = aggregator.terminate(Duration::from_secs(15));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "the aggregator did not drain on SIGTERM: {stopped:?}\n{}",
        aggregator.log()
    );
    assert!(handler.terminate(Duration::from_secs(10)).is_some());
}

/// A Flex Consumption package is a zip mounted read-only, and the host sets the execute bit only
/// on the handler: the static ffmpeg and ffprobe beside it may not run. The handler runs copies
/// with the bit set from its scratch folder instead of refusing to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packaged_tools_without_the_execute_bit_run_from_copies() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("package");
    std::fs::create_dir_all(&package).unwrap();
    let handler = package.join("stylefleet-functions");
    std::fs::copy(functions_binary(), &handler).unwrap();
    for tool in ["ffmpeg", "ffprobe"] {
        let system = which(tool);
        let packaged = package.join(tool);
        std::fs::copy(&system, &packaged).unwrap();
        std::fs::set_permissions(&packaged, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let scratch = dir.path().join("scratch");
    let env = vec![
        (
            "STYLEFLEET_STORE".to_owned(),
            dir.path().join("store").display().to_string(),
        ),
        (
            "STYLEFLEET_QUEUE".to_owned(),
            dir.path().join("queue.sqlite").display().to_string(),
        ),
        (
            "STYLEFLEET_SCRATCH".to_owned(),
            scratch.display().to_string(),
        ),
    ];
    // It answers only after ffprobe ran.
    let (mut proc, _base) = start_handler_from(&handler, &env, dir.path()).await;
    for tool in ["ffmpeg", "ffprobe"] {
        let copy = scratch.join("tools").join(tool);
        let mode = std::fs::metadata(&copy)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", copy.display(), proc.log()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{tool} copy is not executable");
    }
    assert!(proc.log().contains("running copies"), "{}", proc.log());
    // The package itself is left as it was.
    let mode = std::fs::metadata(package.join("ffprobe"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(proc.terminate(Duration::from_secs(10)).is_some());
}

/// Waits up to 300 s for `job` to be `wanted` (or done, which ends every wait); panics with
/// `logs()` when it is not.
async fn until_state(store: &Store, job: &str, wanted: &str, logs: impl Fn() -> String) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = job_status(store, job).await
            && (status["state"] == wanted || status["state"] == "done")
        {
            assert_eq!(status["state"], wanted, "{status}\n{}", logs());
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "not {wanted} in time\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The path of `tool` on `PATH`.
fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}

/// A distributed run in which every process is held to its identity's grants in `matrix` (the
/// deployed `infra/access.json` when `None`; see `stylefleet::access`): Azurite in the
/// deployment's layout, the SQLite queue, the splitter (`functions`) once it has planned one job
/// (20 frames in batches of 6, one batch queued at a time, so that finished batches post the
/// rest to `batches`), two workers (`worker`, with `worker_faults` armed once) and the aggregator
/// (`aggregator`). Each refusal is also written to a file ([`GrantedRun::denied`]).
struct GrantedRun {
    dir: tempfile::TempDir,
    _azurite: Azurite,
    store: Store,
    queue: Arc<dyn Queue>,
    env: Vec<(String, String)>,
    denials: PathBuf,
    clip: PathBuf,
    job: String,
    handler: Proc,
    workers: Vec<Proc>,
    aggregator: Proc,
    health: String,
}

impl GrantedRun {
    async fn start(matrix: Option<&Value>, worker_faults: Option<&str>) -> GrantedRun {
        use stylefleet::access::{Account, Guard, Matrix};
        let dir = tempfile::tempdir().unwrap();
        let azurite = Azurite::start();
        for container in stylefleet::store::azure::LAYOUT_CONTAINERS {
            azurite.create_container(container).await;
        }
        // The deployment's layout: the data store is the account, each top-level folder a
        // container; logs go to a store of their own (the system account, here the same
        // emulator account).
        let account = azurite.account_url();
        let store = Store::open(&account).unwrap();
        let queue_file = dir.path().join("queue.sqlite");
        let queue = sqlite_queue(&queue_file);
        let denials = dir.path().join("denials.jsonl");
        let mut env = azurite.env();
        env.extend([
            ("STYLEFLEET_STORE".to_owned(), account.clone()),
            ("STYLEFLEET_LOG_STORE".to_owned(), account.clone()),
            (
                "STYLEFLEET_QUEUE".to_owned(),
                queue_file.display().to_string(),
            ),
            ("STYLEFLEET_BATCH_FRAMES".to_owned(), "6".to_owned()),
            ("STYLEFLEET_MAX_QUEUED_PER_JOB".to_owned(), "1".to_owned()),
            ("STYLEFLEET_LOCK_SECS".to_owned(), "20".to_owned()),
            ("STYLEFLEET_MAX_DELIVERIES".to_owned(), "10".to_owned()),
            (
                "STYLEFLEET_ACCESS_DENIALS".to_owned(),
                denials.display().to_string(),
            ),
        ]);
        let deployed = Matrix::deployed().unwrap();
        let operator = match matrix {
            Some(m) => {
                let file = dir.path().join("access.json");
                std::fs::write(&file, m.to_string()).unwrap();
                env.push((
                    "STYLEFLEET_ACCESS_MATRIX".to_owned(),
                    file.display().to_string(),
                ));
                Matrix::parse(&m.to_string()).unwrap()
            }
            None => deployed,
        };
        let as_identity = |who: &str| {
            let mut env = env.clone();
            env.push(("STYLEFLEET_IDENTITY".to_owned(), who.to_owned()));
            env
        };

        // The operator uploads the video (in this process, held to the operator's grants).
        let operator_store = Guard::new("operator", operator)
            .unwrap()
            .store(&store, Account::Data);
        let clip = clips::cfr_with_aac(dir.path(), 96, 64, 20, 10);
        let path = "input/yellow-woodcut/granted.mp4";
        let (etag, size) = upload(&operator_store, path, &clip).await;

        let mut handler_env = as_identity("functions");
        handler_env.push((
            "STYLEFLEET_DATA".to_owned(),
            dir.path().join("functions").display().to_string(),
        ));
        let (handler, base) = start_handler(&handler_env, dir.path()).await;
        let (status, answer) = post(
            &format!("{base}/splitter"),
            blob_created(
                "ev-granted",
                &format!("{account}/{path}"),
                "PutBlob",
                &etag,
                size,
            )
            .to_string(),
        )
        .await;
        let denied = std::fs::read_to_string(&denials).unwrap_or_default();
        assert_eq!(status, 200, "{answer}\n{}\n{denied}", handler.log());
        let job = answer["ReturnValue"]["events"][0]["job"]
            .as_str()
            .unwrap_or_else(|| panic!("no job: {answer}\n{}", handler.log()))
            .to_owned();
        assert_eq!(queue.backlog(BATCHES).await.unwrap(), 1, "a window of one");

        let workers: Vec<Proc> = (0..2)
            .map(|i| {
                let mut command = Command::new(env!("CARGO_BIN_EXE_stylefleet"));
                command
                    .args(["worker", "--device", "cpu", "--grace", "5"])
                    .arg("--data")
                    .arg(dir.path().join(format!("worker{i}")))
                    .envs(as_identity("worker"))
                    .env("STYLEFLEET_FAULT_DIR", dir.path().join("faults"))
                    .env("RAYON_NUM_THREADS", "1")
                    .env("RUST_LOG", "info");
                if let Some(faults) = worker_faults {
                    command.env("STYLEFLEET_FAULTS", faults);
                }
                Proc::spawn(&format!("worker{i}"), &mut command, dir.path())
            })
            .collect();
        let (aggregator, health) = start_aggregator(&as_identity("aggregator"), dir.path()).await;
        GrantedRun {
            dir,
            _azurite: azurite,
            store,
            queue,
            env,
            denials,
            clip,
            job,
            handler,
            workers,
            aggregator,
            health,
        }
    }

    /// The environment of a process running as `who`.
    fn as_identity(&self, who: &str) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("STYLEFLEET_IDENTITY".to_owned(), who.to_owned()));
        env
    }

    /// Every refusal so far, one JSON line each.
    fn denied(&self) -> String {
        std::fs::read_to_string(&self.denials).unwrap_or_default()
    }

    /// The logs of the workers and the aggregator, and the refusals.
    fn logs(&self) -> String {
        self.workers
            .iter()
            .chain([&self.aggregator])
            .map(|p| p.log())
            .chain([format!("--- refusals ---\n{}", self.denied())])
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `stylefleet <args>` as `who`.
    fn cli(&self, args: &[&str], who: &str) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stylefleet"));
        command.args(args).envs(self.as_identity(who));
        if args[0] != "sas" {
            command.arg("--data").arg(self.dir.path().join("cli"));
        }
        command.output().unwrap()
    }

    /// `stylefleet <args>` as the operator, which must succeed.
    fn operator(&self, args: &[&str]) -> std::process::Output {
        let out = self.cli(args, "operator");
        assert!(
            out.status.success(),
            "stylefleet {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.denied()
        );
        out
    }
}

/// The deployment's access matrix (`infra/access.json`, from which `roles.bicep` creates every
/// role assignment), enforced: each process of a distributed run holds only its identity's grants:
/// the splitter as `functions`, two workers as `worker`, the aggregator as `aggregator`, and the
/// operator's commands (`status`, `dlq list`, `dlq replay`, `sas`) as `operator`. A refused
/// operation fails as Azure's 403 would, and is also written to a file, which must stay empty: a
/// refusal the code swallows (a sweep, a log write) counts too. One batch fails for good on
/// purpose, so that the operator's replay has a job to revive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_works_within_its_grants() {
    let mut run = GrantedRun::start(None, Some("batch.after-chunk=fail")).await;
    let (store, job) = (run.store.clone(), run.job.clone());
    let failed = until_state(&store, &job, "failed", || run.logs()).await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap_or("")
            .contains("injected fault"),
        "{failed}"
    );

    // The operator's commands: see the failure, replay it (which clears the job's failure
    // record, then sends the batch again).
    let json = |out: std::process::Output| serde_json::from_slice::<Value>(&out.stdout).unwrap();
    let listed = json(run.operator(&["status", "--json"]));
    assert_eq!(listed[0]["state"], "failed", "{listed}");
    let dead = json(run.operator(&["dlq", "list", "--json"]));
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");
    run.operator(&["dlq", "replay", "--job", &job]);
    let status = until_state(&store, &job, "done", || run.logs()).await;
    for proc in run.workers.iter().chain([&run.handler, &run.aggregator]) {
        assert!(
            proc.log()
                .contains("holding this process to its access grants"),
            "not held to its grants: {}",
            proc.log()
        );
    }
    let output = status["output"].as_str().unwrap().to_owned();
    let local = run.dir.path().join("output.mp4");
    store.download(&output, &local).await.unwrap();
    assert_eq!(ffprobe_counts(&local), ffprobe_counts(&run.clip));
    assert_eq!(
        store.list(&format!("jobs/{job}/done")).await.unwrap().len(),
        4
    );
    // The per-job logs reached the log store.
    assert!(
        !store.list(&format!("logs/{job}")).await.unwrap().is_empty(),
        "no per-job logs"
    );

    // A malformed stitch message: the aggregator dead-letters it (within its grants).
    run.queue
        .send(STITCH, vec![OutgoingMessage::new("bad-stitch", "not json")])
        .await
        .unwrap();
    let dead_lettered = |n: u64| {
        let health = run.health.clone();
        move || {
            let health = health.clone();
            async move { get_json(&health).await.filter(|h| h["dead_lettered"] == n) }
        }
    };
    eventually("the dead letter", 60, || run.logs(), dead_lettered(1)).await;
    let listed = json(run.operator(&["status", "--json"]));
    assert_eq!(listed[0]["state"], "done", "{listed}");
    let dead = json(run.operator(&["dlq", "list", "--json"]));
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");
    run.operator(&["dlq", "replay", "--queue-name", STITCH]);
    // Replayed, it is dead-lettered again: it is still malformed.
    eventually(
        "the replayed dead letter",
        60,
        || run.logs(),
        dead_lettered(2),
    )
    .await;

    // A SAS: the operator may sign one (it then stops at the emulator, which a SAS refuses);
    // a worker holds neither the delegator role nor write on input.
    let sas = [
        "sas",
        "upload",
        "input/yellow-woodcut/next.mp4",
        "--store",
        "https://devstoreaccount1.blob.core.windows.net",
    ];
    let out = run.cli(&sas, "operator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && !stderr.contains("AuthorizationPermissionMismatch")
            && stderr.contains("refusing to sign"),
        "{stderr}"
    );
    assert!(
        run.denied().is_empty(),
        "refused before the worker's SAS:\n{}",
        run.denied()
    );
    let out = run.cli(&sas, "worker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AuthorizationPermissionMismatch"),
        "{stderr}"
    );
    assert!(stderr.contains("lacks delegate"), "{stderr}");
    std::fs::remove_file(&run.denials).unwrap();

    for w in &mut run.workers {
        assert!(
            w.terminate(Duration::from_secs(20)).is_some(),
            "{}",
            w.log()
        );
    }
    assert!(run.handler.terminate(Duration::from_secs(10)).is_some());
    assert!(run.aggregator.terminate(Duration::from_secs(15)).is_some());
    // Nothing was refused to any component at any point, start and shutdown included.
    assert!(run.denied().is_empty(), "refused:\n{}", run.denied());
}

/// The grants before the fix of the worker's role on `batches` (Data Receiver only): the first
/// batch is styled, but posting the next one is refused with Service Bus's "'Send' claim(s) are
/// required", and the job fails with that reason instead of finishing. This is the deployment
/// bug the matrix test exists to catch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_send_on_batches_a_worker_cannot_post_the_next_window() {
    let mut matrix: Value = serde_json::from_str(include_str!("../infra/access.json")).unwrap();
    let queues = matrix["queues"].as_array_mut().unwrap();
    let before = queues.len();
    queues.retain(|g| !(g["who"] == "worker" && g["queue"] == BATCHES && g["role"] == "busSender"));
    assert_eq!(
        queues.len(),
        before - 1,
        "the deployed matrix lets workers send"
    );
    let run = GrantedRun::start(Some(&matrix), None).await;
    let failed = until_state(&run.store, &run.job, "failed", || run.logs()).await;
    let reason = failed["reason"].as_str().unwrap_or("");
    assert!(reason.contains("'Send' claim(s) are required"), "{failed}");
    assert!(
        run.denied().contains(r#""op":"send","pid""#)
            && run
                .denied()
                .contains(r#""scope":"queue batches","who":"worker""#),
        "{}",
        run.denied()
    );
}
