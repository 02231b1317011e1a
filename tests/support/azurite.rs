//! The Azurite blob emulator for the Azure tests: started on 127.0.0.1 on a free port with its data
//! in a temporary folder, stopped and started again on the same port with the same data (storage
//! faults), killed when dropped.
//!
//! Azurite comes from npm (`package.json` pins it); `scripts/install-deps.sh` installs it. A test
//! that needs it fails, rather than skips, when it is missing: CI always installs it.

#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stylefleet::store::azure::{EMULATOR_ACCOUNT, EMULATOR_KEY};

/// How long Azurite may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) Azurite blob service.
#[derive(Debug)]
pub struct Azurite {
    /// The port it listens on, kept across restarts so that clients need no new address.
    port: u16,
    /// Its workspace: blob data and metadata survive a stop because they live here.
    data: tempfile::TempDir,
    /// The process while it runs.
    child: Option<Child>,
}

/// The executable `npm ci` installs.
pub fn azurite_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite-blob")
}

impl Azurite {
    /// Starts Azurite (blob service only) on a free port with an empty workspace and waits until
    /// it answers. Panics when it is not installed or does not come up.
    pub fn start() -> Self {
        let bin = azurite_bin();
        assert!(
            bin.exists(),
            "Azurite is not installed ({} is missing): run scripts/install-deps.sh",
            bin.display()
        );
        // Bind port 0 to learn a free port, then hand it to Azurite.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port")
            .port();
        let data = tempfile::Builder::new()
            .prefix("azurite")
            .tempdir()
            .expect("a temporary folder for Azurite");
        let mut azurite = Azurite {
            port,
            data,
            child: None,
        };
        azurite.launch();
        azurite
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "Azurite is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("Azurite's log file");
        let child = Command::new(azurite_bin())
            .arg("--blobHost")
            .arg("127.0.0.1")
            .arg("--blobPort")
            .arg(self.port.to_string())
            .arg("--location")
            .arg(self.data.path().join("workspace"))
            .args([
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("Azurite's log file"))
            .stderr(log)
            .spawn()
            .expect("Azurite starts");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "Azurite exited with {status} before answering on port {}: {}",
                    self.port,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Azurite did not answer on port {} within {START_TIMEOUT:?}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("azurite.log")
    }

    /// What Azurite printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it is running now.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The blob service, as `AZURITE_BLOB_STORAGE_URL` wants it: `http://127.0.0.1:<port>`.
    pub fn blob_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The emulator account as a store URL: every top-level folder is a container.
    pub fn account_url(&self) -> String {
        format!("{}/{EMULATOR_ACCOUNT}", self.blob_url())
    }

    /// One container as a store URL (path style, no environment needed).
    pub fn container_url(&self, container: &str) -> String {
        format!("{}/{container}", self.account_url())
    }

    /// The environment that points object_store's conventions at this Azurite, for
    /// `--store az://<container>` in a child process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.blob_url()),
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), EMULATOR_ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), EMULATOR_KEY.into()),
        ]
    }

    /// Adds [`Azurite::env`] to a command.
    pub fn apply_env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.envs(self.env())
    }

    /// Creates `container` if it does not exist (through the store's own container check).
    pub async fn create_container(&self, container: &str) {
        stylefleet::store::azure::open_container(&self.container_url(container))
            .expect("a container store")
            .ensure()
            .await
            .unwrap_or_else(|e| panic!("creating container {container}: {e}"));
    }

    /// Stops it the way a service stops (SIGTERM, so that it saves its metadata), killing it if
    /// it takes more than 10 s. The port stays reserved for [`Azurite::restart`] only by
    /// convention: nothing else in the tests binds a fixed port.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Wait until the port is really closed, so that clients see connection refused.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Checks on a styled video against its source, with ffprobe and ffmpeg alone (independent of the
/// pipeline's own verification).
pub mod check {
    use std::path::Path;
    use std::process::Command;

    fn run(program: &str, args: &[&str]) -> String {
        let out = Command::new(program).args(args).output().expect("runs");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("test paths are UTF-8")
    }

    /// Presentation times of every video frame, in seconds, in display order.
    pub fn video_times(file: &Path) -> Vec<f64> {
        let out = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "frame=best_effort_timestamp_time",
                "-of",
                "csv=p=0",
                s(file),
            ],
        );
        let mut times: Vec<f64> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().trim_end_matches(',').parse().expect("a time"))
            .collect();
        times.sort_by(f64::total_cmp);
        times
    }

    /// `codec_name,width,height` of the first stream of `kind` (`v` or `a`), empty when none.
    pub fn stream(file: &Path, kind: &str) -> String {
        run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-select_streams",
                &format!("{kind}:0"),
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "csv=p=0",
                s(file),
            ],
        )
        .trim()
        .to_owned()
    }

    /// MD5 of the audio packets as stored (stream copy): equal only if the audio was copied.
    pub fn audio_md5(file: &Path) -> String {
        run(
            "ffmpeg",
            &[
                "-hide_banner",
                "-nostdin",
                "-v",
                "error",
                "-i",
                s(file),
                "-map",
                "0:a:0",
                "-c",
                "copy",
                "-f",
                "md5",
                "-",
            ],
        )
        .trim()
        .to_owned()
    }

    /// The output has the source's frames at the source's times, its size, and its audio copied.
    pub fn frame_exact(source: &Path, output: &Path) {
        let (a, b) = (video_times(source), video_times(output));
        assert_eq!(a.len(), b.len(), "frame count of {}", output.display());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() < 1e-3,
                "frame {i}: source at {x} s, output at {y} s"
            );
        }
        let (sv, ov) = (stream(source, "v"), stream(output, "v"));
        let size = |v: &str| v.split(',').skip(1).collect::<Vec<_>>().join("x");
        assert_eq!(size(&sv), size(&ov), "video size");
        assert_eq!(stream(output, "a"), stream(source, "a"), "audio stream");
        assert_eq!(audio_md5(output), audio_md5(source), "audio packets");
    }
}
