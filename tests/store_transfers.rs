#![allow(clippy::unwrap_used)]
//! Streaming transfers between local files and the store ([`Store::upload`], [`Store::download`])
//! on the local folder and on Azurite: create-only uploads that find the name taken, uploads of
//! several parts, nothing but the object left in the store, concurrent downloads to one target,
//! the sweeps, and uploads killed half-way (a child process that SIGKILLs itself at the fault
//! point between two parts).

mod support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stylefleet::store::{Store, UPLOAD_PART_SIZE};
use support::azurite::Azurite;

/// Tells the child entry point what to upload: `<store spec>\n<file>\n<path>\n<create_only>`.
const CHILD_VAR: &str = "STYLEFLEET_TEST_UPLOAD_CHILD";

/// `len` bytes that differ per `seed` and have no period a part boundary could hide.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Every file under `dir` (hidden ones included), relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                folders.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(dir).unwrap().to_owned();
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

/// The names of the objects under `prefix`, sorted.
async fn listed(store: &Store, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    names.sort();
    names
}

async fn read_back(store: &Store, path: &str, dir: &Path) -> Vec<u8> {
    let to = dir.join("read-back.bin");
    store.download(path, &to).await.unwrap();
    std::fs::read(&to).unwrap()
}

/// What every store must do with files; the store holds nothing under `output/` before.
async fn transfers(store: &Store, scratch: &Path) {
    std::fs::create_dir_all(scratch).unwrap();
    // Two and a half parts.
    let first = pattern(2 * UPLOAD_PART_SIZE + UPLOAD_PART_SIZE / 2 + 7, 1);
    let second = pattern(UPLOAD_PART_SIZE + 3, 2);
    let a = scratch.join("a.mp4");
    let b = scratch.join("b.mp4");
    std::fs::write(&a, &first).unwrap();
    std::fs::write(&b, &second).unwrap();

    assert!(store.upload(&a, "output/s/video.mp4", true).await.unwrap());
    assert_eq!(listed(store, "output").await, ["output/s/video.mp4"]);
    assert_eq!(read_back(store, "output/s/video.mp4", scratch).await, first);

    // The name is taken: nothing changes, and no staging is left behind.
    assert!(!store.upload(&b, "output/s/video.mp4", true).await.unwrap());
    assert_eq!(read_back(store, "output/s/video.mp4", scratch).await, first);
    assert_eq!(listed(store, "output").await, ["output/s/video.mp4"]);
    assert_eq!(std::fs::read(&a).unwrap(), first, "the source is untouched");

    // Overwrites replace the whole object, whatever the sizes.
    assert!(store.upload(&a, "output/s/chunk.mp4", false).await.unwrap());
    assert!(store.upload(&b, "output/s/chunk.mp4", false).await.unwrap());
    assert_eq!(
        read_back(store, "output/s/chunk.mp4", scratch).await,
        second
    );
    assert!(store.upload(&a, "output/s/chunk.mp4", false).await.unwrap());
    assert_eq!(read_back(store, "output/s/chunk.mp4", scratch).await, first);

    // An empty file is an object too.
    let empty = scratch.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(
        store
            .upload(&empty, "output/s/empty.mp4", true)
            .await
            .unwrap()
    );
    assert!(
        read_back(store, "output/s/empty.mp4", scratch)
            .await
            .is_empty()
    );

    // A missing source fails and leaves nothing.
    let missing = scratch.join("missing.mp4");
    assert!(
        store
            .upload(&missing, "output/s/none.mp4", true)
            .await
            .is_err()
    );
    assert!(
        store
            .upload(&missing, "output/s/none.mp4", false)
            .await
            .is_err()
    );

    assert_eq!(
        listed(store, "output").await,
        [
            "output/s/chunk.mp4",
            "output/s/empty.mp4",
            "output/s/video.mp4"
        ]
    );

    // Concurrent downloads of one object to one target all succeed with the whole object.
    let target = scratch.join("same.mp4");
    let downloads = (0..4).map(|_| {
        let store = store.clone();
        let target = target.clone();
        tokio::spawn(async move { store.download("output/s/video.mp4", &target).await })
    });
    for done in futures::future::join_all(downloads).await {
        done.unwrap().unwrap();
    }
    assert_eq!(std::fs::read(&target).unwrap(), first);
    let left: Vec<_> = files_under(scratch)
        .into_iter()
        .filter(|f| f.contains(".stylefleet-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// The objects `transfers` leaves, as files under the store's folder.
const OBJECTS: [&str; 3] = [
    "output/s/chunk.mp4",
    "output/s/empty.mp4",
    "output/s/video.mp4",
];

fn inode(path: PathBuf) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[tokio::test]
async fn transfers_on_the_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    // Scratch space where the embedded default has it: inside the data folder.
    let root = dir.path().join("data");
    let scratch = root.join("scratch");
    let store = Store::local(&root).unwrap();
    transfers(&store, &scratch).await;

    // Nothing but the objects and the scratch files: no `#<n>` staging, no temporary files.
    let objects: Vec<String> = files_under(&root)
        .into_iter()
        .filter(|f| !f.starts_with("scratch/"))
        .collect();
    assert_eq!(objects, OBJECTS);
    // A create-only upload of the store's own file is a link, not a copy; an overwrite is a copy.
    assert_eq!(
        inode(root.join("output/s/video.mp4")),
        inode(scratch.join("a.mp4"))
    );
    assert_ne!(
        inode(root.join("output/s/chunk.mp4")),
        inode(scratch.join("a.mp4"))
    );
}

#[tokio::test]
async fn files_from_outside_the_folder_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    // A user's folder: nothing may be linked to its files or written beside them.
    let user = dir.path().join("videos");
    let store = Store::local(&root).unwrap();
    transfers(&store, &user).await;
    assert_eq!(files_under(&root), OBJECTS);
    assert_ne!(
        inode(root.join("output/s/video.mp4")),
        inode(user.join("a.mp4"))
    );
    assert_eq!(
        files_under(&user),
        ["a.mp4", "b.mp4", "empty.mp4", "read-back.bin", "same.mp4"]
    );
}

#[tokio::test]
async fn transfers_on_azurite() {
    let azurite = Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    // One container holding the layout, and the account (a container per top-level folder,
    // where the staging object must sit in the destination's container).
    let container = Store::open(&azurite.container_url("data")).unwrap();
    transfers(&container, &dir.path().join("container")).await;
    assert_eq!(listed(&container, "").await.len(), 3);
    let account = Store::open(&azurite.account_url()).unwrap();
    transfers(&account, &dir.path().join("account")).await;
}

#[tokio::test]
async fn the_scratch_sweep_removes_old_temporary_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let temporary = [
        ".stylefleet-upload-a1B2c3#0",
        "stitch/job/.stylefleet-download-x9Y8z7",
        "sources/.fetch-Qw3rty",
    ];
    let ours = [
        "stitch/job/00000.mp4",
        "sources/abc.mp4",
        "notes.stylefleet-upload-",
    ];
    for name in temporary.iter().chain(&ours) {
        let path = scratch.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }
    let all = files_under(&scratch);

    // Fresh files stay, temporary or not.
    let removed = Store::sweep_scratch(&scratch, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 0);
    assert_eq!(files_under(&scratch), all);

    // Old enough, the temporary ones go and nothing else does.
    let removed = Store::sweep_scratch(&scratch, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, temporary.len());
    let mut kept = ours.to_vec();
    kept.sort();
    assert_eq!(files_under(&scratch), kept);

    // A folder that does not exist (yet) has nothing to sweep.
    let none = dir.path().join("none");
    assert_eq!(
        Store::sweep_scratch(&none, Duration::ZERO).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn the_store_sweep_removes_staging_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::local(&root).unwrap();
    store.put("jobs/j/status.json", "{}").await.unwrap();
    // A user's file, and what killed writes leave: object_store's staging of a small write, and
    // an upload's copy across file systems.
    for name in [
        "input/s/clip#take2.mp4",
        "jobs/j/status.json#1",
        "output/s/.stylefleet-upload-a1B2c3#0",
    ] {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }
    assert_eq!(
        store
            .sweep_staging(&["input", "output", "jobs"], Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(files_under(&root).len(), 4);
    assert_eq!(
        store
            .sweep_staging(&["input", "output", "jobs"], Duration::ZERO)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        files_under(&root),
        ["input/s/clip#take2.mp4", "jobs/j/status.json"]
    );
}

#[tokio::test]
async fn the_store_sweep_removes_staging_objects_on_azurite() {
    let azurite = Azurite::start();
    let store = Store::open(&azurite.account_url()).unwrap();
    store.put("output/s/kept.mp4", "video").await.unwrap();
    store
        .put("output/.staging/s/left.mp4", "video")
        .await
        .unwrap();
    store.put("jobs/.staging/j/left.json", "{}").await.unwrap();
    // Another process's staging, in a container this one does not upload to: left alone.
    store.put("styles/.staging/s.png", "png").await.unwrap();
    let tops = ["output", "jobs"];
    assert_eq!(
        store
            .sweep_staging(&tops, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.sweep_staging(&tops, Duration::ZERO).await.unwrap(), 2);
    assert_eq!(listed(&store, "output").await, ["output/s/kept.mp4"]);
    assert!(listed(&store, "jobs").await.is_empty());
    assert_eq!(listed(&store, "styles").await, ["styles/.staging/s.png"]);
}

/// Not a test: the upload a killed child runs (see [`upload_killed_half_way`]).
#[test]
#[ignore = "run by the kill tests in a child process"]
fn child_upload() {
    let Ok(spec) = std::env::var(CHILD_VAR) else {
        return;
    };
    let fields: Vec<&str> = spec.lines().collect();
    let [store, from, path, create_only] = fields[..] else {
        panic!("bad {CHILD_VAR}: {spec:?}");
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(store).unwrap();
    let created = runtime
        .block_on(store.upload(Path::new(from), path, create_only == "true"))
        .unwrap();
    println!("uploaded (created: {created})");
}

/// Uploads `from` to `path` in a child process armed to SIGKILL itself between two parts, and
/// checks that it died there.
fn upload_killed_half_way(store: &str, from: &Path, path: &str, create_only: bool) {
    let spec = format!("{store}\n{}\n{path}\n{create_only}", from.display());
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["child_upload", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_VAR, spec)
        .env(stylefleet::fault::FAULTS_VAR, "store.upload.mid=kill")
        .env_remove(stylefleet::fault::FAULT_DIR_VAR)
        .output()
        .unwrap();
    assert_eq!(
        output.status.signal(),
        Some(9),
        "the child was to be killed half-way: {:?}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_killed_upload_leaves_nothing_in_the_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let bytes = pattern(3 * UPLOAD_PART_SIZE, 3);
    let chunk = scratch.join("00000.mp4");
    std::fs::write(&chunk, &bytes).unwrap();
    let store = Store::local(&root).unwrap();
    let objects = |root: &Path| -> Vec<String> {
        files_under(root)
            .into_iter()
            .filter(|f| !f.starts_with("scratch/"))
            .collect()
    };

    // An overwrite (a chunk) is copied beside its source: killed half-way, the copy is in the
    // scratch folder, and the store has nothing.
    upload_killed_half_way(
        root.to_str().unwrap(),
        &chunk,
        "jobs/j/chunks/00000.mp4",
        false,
    );
    assert_eq!(objects(&root), Vec::<String>::new());
    assert_eq!(
        files_under(&scratch).len(),
        2,
        "{:?}",
        files_under(&scratch)
    );
    assert_eq!(
        Store::sweep_scratch(&scratch, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(files_under(&scratch), ["00000.mp4"]);

    // The retry completes, and leaves the object alone.
    assert!(
        store
            .upload(&chunk, "jobs/j/chunks/00000.mp4", false)
            .await
            .unwrap()
    );
    assert_eq!(objects(&root), ["jobs/j/chunks/00000.mp4"]);
    assert_eq!(files_under(&scratch), ["00000.mp4"]);
    assert_eq!(
        std::fs::read(root.join("jobs/j/chunks/00000.mp4")).unwrap(),
        bytes
    );
}

#[tokio::test]
async fn a_killed_upload_of_a_users_file_leaves_only_unlisted_staging() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let store = Store::local(&root).unwrap();
    let bytes = pattern(3 * UPLOAD_PART_SIZE, 4);
    let video = dir.path().join("clip.mp4");
    std::fs::write(&video, &bytes).unwrap();

    for create_only in [true, false] {
        upload_killed_half_way(
            root.to_str().unwrap(),
            &video,
            "input/s/clip.mp4",
            create_only,
        );
        // The copy in the destination's folder is neither the object nor listed.
        assert!(!store.exists("input/s/clip.mp4").await.unwrap());
        assert!(listed(&store, "input").await.is_empty());
        assert_eq!(files_under(&root).len(), 1, "{:?}", files_under(&root));
        assert_eq!(
            store
                .sweep_staging(&["input", "output", "jobs"], Duration::ZERO)
                .await
                .unwrap(),
            1
        );
        assert_eq!(files_under(&root), Vec::<String>::new());
    }

    assert!(
        store
            .upload(&video, "input/s/clip.mp4", true)
            .await
            .unwrap()
    );
    assert_eq!(files_under(&root), ["input/s/clip.mp4"]);
    assert_eq!(
        files_under(dir.path()).len(),
        2,
        "nothing beside the user's file"
    );
}

#[tokio::test]
async fn a_killed_upload_leaves_nothing_on_azurite() {
    let azurite = Azurite::start();
    let url = azurite.container_url("data");
    let store = Store::open(&url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bytes = pattern(3 * UPLOAD_PART_SIZE, 5);
    let output = dir.path().join("output.mp4");
    std::fs::write(&output, &bytes).unwrap();

    for create_only in [true, false] {
        upload_killed_half_way(&url, &output, "output/s/v.mp4", create_only);
        // Parts that were sent are not committed: no object, staged or final.
        assert!(listed(&store, "").await.is_empty());
    }

    assert!(store.upload(&output, "output/s/v.mp4", true).await.unwrap());
    assert_eq!(listed(&store, "").await, ["output/s/v.mp4"]);
    assert_eq!(read_back(&store, "output/s/v.mp4", dir.path()).await, bytes);
}
