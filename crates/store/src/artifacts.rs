use crate::{Result, StoreError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Content-addressed files in the data directory: uploaded components
/// (`artifacts/<sha256>.wasm`) and their ahead-of-time compiled form
/// (`compiled/<engine>/<sha256>.cwasm`, one folder per engine configuration).
#[derive(Debug, Clone)]
pub struct ArtifactDir {
    root: PathBuf,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

impl ArtifactDir {
    pub fn open(data_dir: &Path) -> Result<Self> {
        for sub in ["artifacts", "compiled", "tmp"] {
            let p = data_dir.join(sub);
            fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        }
        Ok(ArtifactDir {
            root: data_dir.to_path_buf(),
        })
    }

    pub fn sha256(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    pub fn wasm_path(&self, sha256: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{sha256}.wasm"))
    }

    pub fn compiled_path(&self, engine: &str, sha256: &str) -> PathBuf {
        self.root
            .join("compiled")
            .join(engine)
            .join(format!("{sha256}.cwasm"))
    }

    /// Writes `bytes` to `dest` durably: a temporary file, fsync, rename, fsync the folder.
    /// A crash leaves either the old state or the whole new file, never half a file.
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let dir = dest.parent().expect("artifact paths have a parent");
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.root.join("tmp").join(format!(
            "{}.{}.{}.tmp",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io(format!("writing {}", tmp.display())))?;
        drop(f);
        fs::rename(&tmp, dest).map_err(io(format!("renaming to {}", dest.display())))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_addresses_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ArtifactDir::open(tmp.path()).unwrap();
        let sha = ArtifactDir::sha256(b"hello");
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let p = dir.wasm_path(&sha);
        dir.write_atomic(&p, b"hello").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        let c = dir.compiled_path("e1", &sha);
        dir.write_atomic(&c, b"x").unwrap();
        assert!(c.exists());
    }
}
