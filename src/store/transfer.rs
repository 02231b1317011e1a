//! File transfers behind [`Store`](super::Store)'s uploads, downloads and sweeps: streaming parts
//! to a remote store, linking or copying into a local folder without a partial file ever being
//! visible, and finding what killed transfers left behind. Split from the store's API so that
//! each file reads as one concept.

use super::*;

/// How long a create-only upload waits for its server-side copy to finish.
pub(super) const COPY_WAIT: Duration = Duration::from_secs(600);

/// The staging name of one create-only upload to a remote store:
/// `<top>/.staging/<rest>.<attempt>`, in the destination's container. The attempt (`<pid>-<n>`,
/// unique in this process) keeps two uploads of one name apart: sharing a staging blob, one's
/// commit would discard the other's uncommitted blocks (Azure answers `InvalidBlockList`), as
/// two `process` commands storing the same video at once did.
pub(super) fn staging_path(path: &str, attempt: &str) -> String {
    match path.split_once('/') {
        Some((top, rest)) => format!("{top}/{STAGING_DIR}/{rest}.{attempt}"),
        None => format!("{STAGING_DIR}/{path}.{attempt}"),
    }
}

/// A name for one upload attempt, unique among this host's processes: `<pid>-<n>`.
pub(super) fn upload_attempt() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Reads `file` in parts of [`UPLOAD_PART_SIZE`] into `writer`, at most
/// [`UPLOAD_PARTS_IN_FLIGHT`] parts in flight; returns the size.
pub(super) async fn send_parts(
    file: &mut tokio::fs::File,
    from: &Path,
    writer: &mut WriteMultipart,
    target: &str,
) -> Result<u64> {
    let mut size = 0u64;
    loop {
        writer
            .wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT)
            .await
            .map_err(|e| StoreError::backend(target, e))?;
        let mut part = vec![0u8; UPLOAD_PART_SIZE];
        let mut filled = 0;
        while filled < part.len() {
            let n = file
                .read(&mut part[filled..])
                .await
                .map_err(|source| StoreError::Io {
                    context: format!("cannot read {}", from.display()),
                    source,
                })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(size);
        }
        part.truncate(filled);
        size += filled as u64;
        writer.put(Bytes::from(part));
        if filled < UPLOAD_PART_SIZE {
            return Ok(size);
        }
        between_parts()?;
    }
}

/// The fault point between two parts of an upload (for tests that kill an upload half-way).
pub(super) fn between_parts() -> Result<()> {
    crate::fault::hit("store.upload.mid").map_err(|e| StoreError::Io {
        context: "upload".into(),
        source: std::io::Error::other(e),
    })
}

/// [`Store::upload`] to a local store whose folder is `root`, `from` to the file `to` (blocking).
///
/// A file inside `root` is the store's own (the scratch folder lives there by default): a
/// create-only upload links it, an overwrite stages its copy beside it. A file from elsewhere (a
/// user's video) is copied, staged in the destination's folder under a name listings leave out:
/// the store never shares a file that someone else may rewrite, and writes nothing beside it.
pub(super) fn upload_file(root: &Path, from: &Path, to: &Path, create_only: bool) -> Result<bool> {
    let io = |context: String| move |source| StoreError::Io { context, source };
    // Resolved, so that a symbolic link is linked as the file it names and judged by its place.
    let from = &from
        .canonicalize()
        .map_err(io(format!("cannot read {}", from.display())))?;
    let owned = from.starts_with(root);
    let folder = parent_of(to);
    std::fs::create_dir_all(folder).map_err(io(format!("cannot create {}", folder.display())))?;
    if create_only {
        if owned {
            // The link publishes the name: the bytes behind it must be on disk first.
            sync_file(from)?;
            match std::fs::hard_link(from, to) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
                // Another file system under the folder, or no links there: copy.
                Err(e) if cannot_link(&e) => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        context: format!("cannot link {} to {}", from.display(), to.display()),
                        source: e,
                    });
                }
            }
        }
        let staged = copy_to_temp(from, &[folder])?;
        return match std::fs::hard_link(staged.path(), to) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::Io {
                context: format!(
                    "cannot link {} to {}",
                    staged.path().display(),
                    to.display()
                ),
                source: e,
            }),
        };
    }
    // Beside the source, a kill leaves the copy in scratch space rather than in the store.
    let staged = if owned {
        copy_to_temp(from, &[parent_of(from), folder])?
    } else {
        copy_to_temp(from, &[folder])?
    };
    match staged.persist(to) {
        Ok(_) => Ok(true),
        // Beside the source was on another file system after all.
        Err(e) if cannot_link(&e.error) => {
            drop(e.file);
            copy_to_temp(from, &[folder])?
                .persist(to)
                .map(|_| true)
                .map_err(|e| StoreError::Io {
                    context: format!("cannot rename to {}", to.display()),
                    source: e.error,
                })
        }
        Err(e) => Err(StoreError::Io {
            context: format!("cannot rename to {}", to.display()),
            source: e.error,
        }),
    }
}

/// A complete, synced copy of `from` in a temporary file in the first of `folders` that takes
/// one, copied in parts of [`UPLOAD_PART_SIZE`] by the kernel (no bytes pass through this
/// process).
pub(super) fn copy_to_temp(from: &Path, folders: &[&Path]) -> Result<tempfile::NamedTempFile> {
    let io = |context: String| move |source| StoreError::Io { context, source };
    let mut made = Err(std::io::Error::from(ErrorKind::NotFound));
    let mut folder = Path::new(".");
    for candidate in folders {
        folder = candidate;
        made = temp_file(folder, UPLOAD_PREFIX, UPLOAD_SUFFIX);
        if made.is_ok() {
            break;
        }
    }
    let mut staged = made.map_err(io(format!("cannot create a file in {}", folder.display())))?;
    let mut source =
        std::fs::File::open(from).map_err(io(format!("cannot read {}", from.display())))?;
    loop {
        let copied = std::io::copy(
            &mut (&mut source).take(UPLOAD_PART_SIZE as u64),
            staged.as_file_mut(),
        )
        .map_err(io(format!(
            "cannot copy {} to {}",
            from.display(),
            staged.path().display()
        )))?;
        if copied < UPLOAD_PART_SIZE as u64 {
            break;
        }
        between_parts()?;
    }
    staged
        .as_file()
        .sync_all()
        .map_err(io(format!("cannot sync {}", staged.path().display())))?;
    Ok(staged)
}

/// A new temporary file in `folder`, readable as the umask allows like any file the store writes
/// (a temporary file is private by default, and it becomes an object by a rename).
pub(super) fn temp_file(
    folder: &Path,
    prefix: &str,
    suffix: &str,
) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(folder)
}

pub(super) fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| StoreError::Io {
            context: format!("cannot sync {}", path.display()),
            source,
        })
}

/// Whether a link (or a rename) failed for want of one file system, rather than for a reason a
/// copy would meet too.
pub(super) fn cannot_link(e: &std::io::Error) -> bool {
    use nix::libc;
    e.kind() == ErrorKind::CrossesDevices
        || matches!(
            e.raw_os_error(),
            // No links on this file system, too many, or not allowed for this user (Linux's
            // protected hard links refuse links to files of other users).
            Some(libc::EPERM | libc::EMLINK | libc::EOPNOTSUPP)
        )
}

/// The folder a file is in (`.` for a bare name).
pub(super) fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `name` is object_store's local staging name: `<name>#<digits>`.
pub(super) fn is_backend_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the files under `dir` whose names `matches` and whose status has not changed for
/// `older_than` (the change time: a write, a link or a rename all refresh it, unlike the
/// modification time of a freshly linked old file).
pub(super) fn sweep_folder(
    dir: &Path,
    older_than: Duration,
    matches: &dyn Fn(&str) -> bool,
) -> std::io::Result<usize> {
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // Not followed: a link to elsewhere is not ours to sweep.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                folders.push(entry.path());
                continue;
            }
            let changed = SystemTime::UNIX_EPOCH
                + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().max(0) as u32);
            let name = entry.file_name();
            if meta.is_file() && changed <= cutoff && name.to_str().is_some_and(matches) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
}

pub(super) async fn run_blocking(
    what: &'static str,
    work: impl FnOnce() -> std::io::Result<usize> + Send + 'static,
) -> Result<usize> {
    let io = |source| StoreError::Io {
        context: what.to_owned(),
        source,
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)
}
