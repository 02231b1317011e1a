#![allow(clippy::unwrap_used)]
//! The fleet's web page (`stylefleet up --ui`) in a real browser: headless Chromium from Debian's
//! packages (`chromium`, `chromium-driver`; `scripts/install-deps.sh` installs them), driven over
//! WebDriver.
//!
//! One fleet, one page, as a user would have them: a clip dropped into `input/0/` under a file
//! name written in HTML's escapes shows on the page as it is, runs, and ends `done` with its source and styled
//! frames; a second clip has a batch fail for good (the named fault point `batch.after-chunk`,
//! armed to fire once), shows `failed` with the reason and its dead letter; a click on the
//! letter's replay button and on the confirmation revives it, and it finishes. The worker count
//! follows the autoscaler up and back to zero. Screenshots go to the test's target folder.
//!
//! Also: a non-loopback `--ui` address is refused before anything starts, and on loopback a
//! request with a foreign `Host` is refused.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use support::azurite::check;
use support::clips;
use support::fleet::*;

/// The fault point that fails the second job's batch; it fires once, when its mark is absent.
const FAULT: &str = "batch.after-chunk";

/// A file name written in HTML's escapes: shown unescaped, it would read `Tom & Jerry <b>.mp4`.
/// (The store refuses `<` and `>` in names; the page's unit tests feed it those.)
const HTML_NAME: &str = "Tom &amp; Jerry's &lt;b&gt;.mp4";

/// Where a program is on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Headless Chromium behind chromedriver, and a WebDriver session on it. Everything it started
/// dies with it.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        let missing = "headless Chromium is missing: the browser test needs the Debian packages \
                       chromium and chromium-driver; run scripts/install-deps.sh";
        let chromium = on_path("chromium").expect(missing);
        let chromedriver = on_path("chromedriver").expect(missing);
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=1200,860",
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}"));
        Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.client().goto(url)).unwrap();
    }

    /// Runs `js` (a function body) in the page and returns what it returns.
    fn eval(&self, js: &str) -> Value {
        self.rt
            .block_on(self.client().execute(js, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{js}"))
    }

    /// Clicks the element `css` selects, as a user does (WebDriver scrolls to it, checks that it
    /// can be clicked, and sends the pointer events). The rows are re-rendered when they change,
    /// so an element may go stale between finding and clicking: then it is found again.
    fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let clicked = self
                .rt
                .block_on(async { self.client().find(Locator::Css(css)).await?.click().await });
            match clicked {
                Ok(()) => return,
                Err(e) if tries < 5 => {
                    tries += 1;
                    eprintln!("clicking {css} again: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot click {css}: {e}"),
            }
        }
    }

    /// Saves a screenshot (PNG) and returns its size in pixels.
    fn screenshot(&self, to: &Path) -> (u32, u32) {
        let png = self.rt.block_on(self.client().screenshot()).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        fs::write(to, &png).unwrap();
        eprintln!("screenshot: {} ({width}x{height})", to.display());
        (width, height)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The jobs as the page lists them: id, state, file name, reason text, and its thumbnails.
fn page_jobs(browser: &Browser) -> Vec<Value> {
    browser
        .eval(
            r##"return [...document.querySelectorAll("#jobs tr.job")].map(r => ({
                job: r.dataset.job,
                state: r.dataset.state,
                name: r.querySelector(".name").textContent,
                reason: r.querySelector("td.reason").textContent,
                thumbs: [...r.querySelectorAll("td.thumbs img")].map(i => ({
                    src: i.getAttribute("src"),
                    loaded: i.complete && i.naturalWidth > 0,
                    width: i.naturalWidth,
                    height: i.naturalHeight,
                })),
            }));"##,
        )
        .as_array()
        .unwrap()
        .clone()
}

/// The dead letters as the page lists them.
fn page_letters(browser: &Browser) -> Vec<Value> {
    browser
        .eval(
            r##"return [...document.querySelectorAll("#letters tr.letter")].map(r => ({
                id: r.dataset.id,
                text: r.textContent,
            }));"##,
        )
        .as_array()
        .unwrap()
        .clone()
}

/// The worker count the page shows.
fn page_workers(browser: &Browser) -> Option<u64> {
    browser
        .eval(r##"return document.getElementById("worker-count").textContent;"##)
        .as_str()
        .and_then(|s| s.trim().parse().ok())
}

fn job_named<'a>(jobs: &'a [Value], name: &str) -> Option<&'a Value> {
    jobs.iter().find(|j| j["name"] == name)
}

/// The status line of an HTTP/1.1 GET sent with `host` as its `Host`.
fn status_line_with_host(addr: &str, host: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /api/state HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_page_shows_jobs_frames_and_failures_and_replays_a_dead_letter() {
    let started = Instant::now();
    let mut fleet = Fleet::new(
        &[
            "--max-workers",
            "1",
            "--batch-frames",
            "4",
            "--poll",
            "0.3",
            "--settle",
            "0.3",
            "--cooldown",
            "3",
            "--ui",
            "127.0.0.1:0",
        ],
        &[],
    );
    let faults = fleet.root.join("faults");
    fs::create_dir_all(&faults).unwrap();
    // Marked as fired already: the point stays quiet until the mark is removed.
    let mark = faults.join(format!("{FAULT}.fired"));
    fs::write(&mark, "").unwrap();
    fleet
        .env
        .push(("STYLEFLEET_FAULTS".into(), format!("{FAULT}=fail")));
    fleet
        .env
        .push(("STYLEFLEET_FAULT_DIR".into(), faults.display().to_string()));
    let clip = clips::cfr_with_aac(&fleet.root, 160, 90, 8, 25);

    fleet.start();
    let url = fleet
        .events()
        .iter()
        .find(|e| message(e) == "web page up")
        .and_then(|e| e["fields"]["url"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("up logs the page's URL\n{}", fleet.log_tail()));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{url}");

    // A page elsewhere that resolves its own name to this address gets nothing.
    assert!(
        status_line_with_host(&addr, "evil.example").contains("403"),
        "a foreign Host is refused"
    );
    assert!(status_line_with_host(&addr, &addr).contains("200"));

    let browser = Browser::start();
    browser.goto(&url);
    assert_eq!(
        browser.eval("return document.title;"),
        "stylefleet",
        "the page loads"
    );
    let mut workers_seen = std::collections::BTreeSet::new();

    // The first job: a file name made of HTML, shown as text, done, with both frames.
    fleet.drop_clip(&clip, &format!("input/0/{HTML_NAME}"));
    let first = fleet.wait(
        "the first job done on the page, with its frames",
        DEADLINE,
        || {
            workers_seen.extend(page_workers(&browser));
            let jobs = page_jobs(&browser);
            let job = job_named(&jobs, HTML_NAME)?;
            (job["state"] == "done"
                && job["thumbs"].as_array()?.len() == 2
                && job["thumbs"]
                    .as_array()?
                    .iter()
                    .all(|t| t["loaded"] == true))
            .then(|| job.clone())
        },
    );
    assert_eq!(first["name"], HTML_NAME, "the file name shows as it is");
    for thumb in first["thumbs"].as_array().unwrap() {
        assert_eq!(
            (thumb["width"].as_u64(), thumb["height"].as_u64()),
            (Some(160), Some(90)),
            "a thumbnail at the clip's size: {thumb}"
        );
    }
    let srcs: Vec<&str> = first["thumbs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["src"].as_str().unwrap())
        .collect();
    let job1 = first["job"].as_str().unwrap().to_owned();
    assert_eq!(
        srcs,
        [
            format!("thumbs/{job1}/1/source.jpg"),
            format!("thumbs/{job1}/1/styled.jpg")
        ],
        "the frames of the last chunk"
    );

    // The second job: its first batch to reach the fault point fails for good.
    fs::remove_file(&mark).unwrap();
    fleet.drop_clip(&clip, "input/0/second.mp4");
    let failed = fleet.wait(
        "the second job failed on the page, with its dead letter",
        DEADLINE,
        || {
            workers_seen.extend(page_workers(&browser));
            let jobs = page_jobs(&browser);
            let job = job_named(&jobs, "second.mp4")?;
            let letters = page_letters(&browser);
            (job["state"] == "failed" && letters.len() == 1)
                .then(|| (job.clone(), letters[0].clone()))
        },
    );
    let (job2, letter) = failed;
    assert!(mark.exists(), "the fault fired");
    let job2_id = job2["job"].as_str().unwrap().to_owned();
    assert!(
        job2["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("injected fault at {FAULT}")),
        "the page says why: {job2}"
    );
    assert!(
        letter["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{job2_id}:")),
        "the letter is the failed job's batch: {letter}"
    );
    assert!(
        letter["text"].as_str().unwrap().contains("injected fault"),
        "{letter}"
    );
    // Newest first.
    let order: Vec<String> = page_jobs(&browser)
        .iter()
        .map(|j| j["job"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, [job2_id.clone(), job1.clone()], "newest first");
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    browser.screenshot(&target.join("ui-failed.png"));

    // Replay it from the page: the row's button asks first, the confirmation replays.
    browser.click("#letters tr.letter button.replay");
    let question = fleet.wait("the confirmation", Duration::from_secs(10), || {
        let shown = browser.eval(
            r##"const c = document.getElementById("confirm");
               return c.hidden ? null : document.getElementById("confirm-text").textContent;"##,
        );
        shown.as_str().map(str::to_owned)
    });
    assert!(
        question.starts_with("Replay 1 dead-lettered message (message "),
        "{question}"
    );
    assert_eq!(fleet.dead_letters().len(), 1, "asking replays nothing");
    browser.screenshot(&target.join("ui-confirm.png"));
    browser.click("#confirm-replay");
    let said = fleet.wait("the replay's result", Duration::from_secs(20), || {
        let text =
            browser.eval(r##"return document.getElementById("replay-result").textContent;"##);
        text.as_str().filter(|t| !t.is_empty()).map(str::to_owned)
    });
    assert!(said.starts_with("Replayed 1 of 1"), "{said}");

    fleet.wait(
        "both jobs done on the page and no dead letter",
        DEADLINE,
        || {
            workers_seen.extend(page_workers(&browser));
            let jobs = page_jobs(&browser);
            (jobs.len() == 2
                && jobs.iter().all(|j| j["state"] == "done")
                && page_letters(&browser).is_empty())
            .then_some(())
        },
    );
    // What the page says is what `status` and `dlq list` say.
    let views = fleet.status();
    assert_eq!(views.len(), 2, "{views:?}");
    assert!(views.iter().all(|v| v["state"] == "done"), "{views:?}");
    assert!(fleet.dead_letters().is_empty());
    let outputs = outputs(&fleet.data, "0");
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    for output in &outputs {
        check::frame_exact(&clip, output);
    }

    // The autoscaler scaled to one worker for the work, and back to zero after the cool-down.
    fleet.wait(
        "no worker on the page after the cool-down",
        DEADLINE,
        || (page_workers(&browser) == Some(0)).then_some(()),
    );
    assert!(
        workers_seen.contains(&1),
        "the page showed the worker at work: saw {workers_seen:?}"
    );
    let (w, h) = browser.screenshot(&target.join("ui-done.png"));
    assert!(w >= 800 && h >= 600, "{w}x{h}");
    eprintln!("browser test took {:?}", started.elapsed());
}

#[test]
fn up_refuses_a_ui_address_off_loopback_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["up", "--ui", "0.0.0.0:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--ui-public"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was created: {stderr}");

    let out = Command::new(BIN)
        .args(["up", "--ui-public", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--ui-public needs --ui");
}
