//! One cplbd per network namespace: an exclusive lock taken before anything is touched.
//!
//! Two daemons driving the same VIPs undo each other: the second one's start-up removes the
//! first one's VIP and rules while the first keeps advertising as master, so no backup takes
//! over. The lock is a `flock` on a file named after the network namespace (its inode), so
//! daemons in other namespaces of the same host, as `cplb lab` runs them, do not collide; it
//! goes with the process, also when it is killed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The held lock; released on drop (or when the process ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: Flock<File>,
    /// The lock file.
    pub path: PathBuf,
}

impl InstanceLock {
    /// Where the record of what this daemon created is kept: beside the lock, named after
    /// the same network namespace (see [`crate::kernel::owned`]).
    pub fn record_path(&self) -> PathBuf {
        self.path.with_extension("owned.json")
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another cplbd holds it.
    #[error(
        "another cplbd{} is running in this network namespace (it holds {}); stop it first, or signal it (SIGHUP reloads its configuration)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.display()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be made or locked.
    #[error("taking the lock {}: {what}: {error}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The step.
        what: &'static str,
        /// The error.
        error: std::io::Error,
    },
}

/// The lock file for the caller's network namespace under `dir`.
pub fn lock_path(dir: &Path) -> Result<PathBuf, LockError> {
    let ns = Path::new("/proc/self/ns/net");
    let ino = std::fs::metadata(ns).map_err(|error| LockError::Io {
        path: ns.to_owned(),
        what: "reading the network namespace",
        error,
    })?;
    Ok(dir.join(format!("cplbd-netns-{}.lock", ino.ino())))
}

/// Takes the lock for this network namespace under `dir` (created if missing), and writes
/// this process's pid into it.
pub fn acquire(dir: &Path) -> Result<InstanceLock, LockError> {
    let path = lock_path(dir)?;
    let io = |what: &'static str| {
        let path = path.clone();
        move |error: std::io::Error| LockError::Io { path, what, error }
    };
    std::fs::create_dir_all(dir).map_err(io("creating the directory"))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("opening"))?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(LockError::Held { path, pid });
        }
        Err((_, errno)) => return Err(io("flock")(errno.into())),
    };
    locked.set_len(0).map_err(io("truncating"))?;
    locked.seek(SeekFrom::Start(0)).map_err(io("seeking"))?;
    writeln!(locked, "{}", std::process::id()).map_err(io("writing the pid"))?;
    Ok(InstanceLock { _file: locked, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_who_holds_the_lock() {
        let dir = std::env::temp_dir().join(format!("cplb-lock-test-{}", std::process::id()));
        let first = acquire(&dir).unwrap();
        let text = std::fs::read_to_string(&first.path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock locks belong to the open file description: a second open is refused too.
        let err = acquire(&dir).unwrap_err();
        let LockError::Held { pid, .. } = &err else { panic!("{err}") };
        assert_eq!(*pid, Some(std::process::id()));
        assert!(err.to_string().contains("another cplbd (pid "), "{err}");
        drop(first);
        let again = acquire(&dir).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
