//! What the lab writes, root's alone: its state directory (`/run/cplb-lab`) is mode 0700,
//! the controllers' logs and the configuration in it 0600, and [`save_logs`] copies the
//! logs into a new private directory when something failed.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::layout::STATE_DIR;
use crate::rng::SplitMix64;

/// Creates `dir` (and missing parents) and makes it mode 0700.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `path` anew, mode 0600.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

/// The controller's log, created root-only if missing (`spawn` appends to it).
pub(crate) fn log_file(name: &str) -> Result<PathBuf, String> {
    let log = Path::new(STATE_DIR).join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| format!("creating {}: {e}", log.display()))?;
    Ok(log)
}

/// Copies the lab's logs into a new private directory; says where (for error messages).
pub fn save_logs() -> String {
    match save_logs_dir() {
        Ok(dir) => format!("; logs kept in {}", dir.display()),
        Err(e) => format!("; the logs could not be saved: {e}"),
    }
}

/// Copies the lab's logs into a new directory under the temporary directory, mode 0700
/// with a name nobody could have guessed and taken first (`cplb-lab-logs-<time>-<pid>-<n>`),
/// each file 0600; the directory.
pub(crate) fn save_logs_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut rng = SplitMix64(now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32));
    let mut made = None;
    for _ in 0..16 {
        let dir = base.join(format!(
            "cplb-lab-logs-{}-{}-{:08x}",
            now.as_secs(),
            std::process::id(),
            rng.next_u64() as u32
        ));
        // Not recursive: fails on anything already there, a symlink included.
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                made = Some(dir);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating a directory in {}: {e}", base.display())),
        }
    }
    let saved = made.ok_or_else(|| format!("no new directory in {}", base.display()))?;
    if let Ok(dir) = std::fs::read_dir(STATE_DIR) {
        for entry in dir.flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let to = saved.join(entry.file_name());
                if std::fs::copy(entry.path(), &to).is_ok() {
                    let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600));
                }
            }
        }
    }
    Ok(saved)
}
