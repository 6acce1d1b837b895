//! The data directory's ownership by one running node, and the record of where that node
//! listens (so `wisp ls` run in the same directory finds it).
//!
//! `wisp up` takes an exclusive lock on `<data-dir>/node.lock` before it touches anything
//! else in the directory: a second node on the same directory would otherwise rewrite
//! its files, open its databases and run a second dispatcher and scheduler over the same
//! events. The lock is an `flock`, released by the kernel when the node's process ends,
//! however it ends. `<data-dir>/node.json` records the holder's pid and addresses; it is
//! informational (the lock decides) and is read by the CLI and by a refused second node.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a running node records about itself in its data directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub pid: u32,
    /// URLs a client on this machine connects to (loopback for wildcard binds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    /// The region the node's S3 API signs for (`--region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

pub fn info_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

/// The node recorded in `data_dir`, if its file is there and readable.
pub fn read_info(data_dir: &Path) -> Option<NodeInfo> {
    let text = std::fs::read_to_string(info_path(data_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// An exclusive hold on a data directory, for the life of the node.
#[derive(Debug)]
pub struct DataDirLock {
    // Held open: closing it (or the process ending) releases the lock.
    _file: File,
    dir: PathBuf,
}

/// How long to wait for a lock that is held: a node killed a moment ago can leave a
/// sandbox child it had forked but not yet exec'd, which shares the lock until it execs.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl DataDirLock {
    /// Takes the lock, waiting briefly for one that a dead node's last child still holds;
    /// fails naming the other node's pid and addresses.
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        Self::acquire_within(data_dir, LOCK_WAIT)
    }

    fn acquire_within(data_dir: &Path, wait: Duration) -> Result<Self> {
        let path = data_dir.join("node.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    bail!("{}", in_use_message(data_dir))
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
        let lock = DataDirLock {
            _file: file,
            dir: data_dir.to_path_buf(),
        };
        lock.record(&NodeInfo {
            pid: std::process::id(),
            ..NodeInfo::default()
        })?;
        Ok(lock)
    }

    /// Records where this node listens (written atomically: readers never see half).
    pub fn record(&self, info: &NodeInfo) -> Result<()> {
        let path = info_path(&self.dir);
        let tmp = self.dir.join("node.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

fn in_use_message(data_dir: &Path) -> String {
    let mut msg = format!(
        "the data directory {} is in use by another Wisp node",
        data_dir.display()
    );
    if let Some(info) = read_info(data_dir) {
        msg.push_str(&format!(" (pid {}", info.pid));
        for (what, url) in [
            ("functions", &info.http),
            ("platform API", &info.api),
            ("S3 API", &info.s3),
        ] {
            if let Some(url) = url {
                msg.push_str(&format!(", {what} on {url}"));
            }
        }
        msg.push(')');
    }
    msg.push_str(": stop it first, or give this node its own directory with --data-dir");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        first
            .record(&NodeInfo {
                pid: 4242,
                http: Some("http://127.0.0.1:8080".into()),
                api: Some("http://127.0.0.1:8081".into()),
                s3: Some("http://127.0.0.1:9000".into()),
                region: None,
            })
            .unwrap();
        let err = DataDirLock::acquire_within(dir.path(), Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("in use by another Wisp node"), "{err}");
        assert!(err.contains("pid 4242"), "{err}");
        assert!(err.contains("http://127.0.0.1:8081"), "{err}");
        // The refused attempt did not touch the holder's record.
        assert_eq!(read_info(dir.path()).unwrap().pid, 4242);
        drop(first);
        let again = DataDirLock::acquire_within(dir.path(), Duration::from_millis(100)).unwrap();
        assert_eq!(read_info(dir.path()).unwrap().pid, std::process::id());
        drop(again);
    }
}
