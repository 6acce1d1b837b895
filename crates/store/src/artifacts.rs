use crate::{Result, StoreError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Content-addressed files in the data directory: uploaded components
/// (`artifacts/<sha256>.wasm`) and their ahead-of-time compiled form
/// (`compiled/<engine>/<sha256>.cwasm`, one folder per engine configuration); native
/// functions' code bundles (`artifacts/<sha256>.tar.gz`) and their unpacked, read-only
/// form (`code/<sha256>/`).
#[derive(Debug, Clone)]
pub struct ArtifactDir {
    root: PathBuf,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

impl ArtifactDir {
    /// Opens (creating) the directories. Whatever `tmp/` holds is left over from a node
    /// that stopped mid-write or mid-unpack (one node owns a data directory at a time),
    /// and is removed.
    pub fn open(data_dir: &Path) -> Result<Self> {
        for sub in ["artifacts", "compiled", "code", "tmp"] {
            let p = data_dir.join(sub);
            fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        }
        if let Ok(entries) = fs::read_dir(data_dir.join("tmp")) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
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

    pub fn bundle_path(&self, sha256: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{sha256}.tar.gz"))
    }

    /// Where a code bundle is unpacked; it exists once [`ArtifactDir::unpack_bundle`] succeeded.
    pub fn code_dir(&self, sha256: &str) -> PathBuf {
        self.root.join("code").join(sha256)
    }

    /// Whether uploaded bytes are a code bundle (gzip) rather than a component.
    pub fn is_bundle(bytes: &[u8]) -> bool {
        bytes.starts_with(&[0x1f, 0x8b])
    }

    /// Unpacks a code bundle (a gzipped tar) into [`ArtifactDir::code_dir`], all or
    /// nothing: entries must be relative paths inside the bundle (no `..`, no absolute
    /// paths, no devices); files become world-readable and directories traversable, so the
    /// unprivileged sandbox user can read them, and nothing is writable but by the node.
    pub fn unpack_bundle(&self, sha256: &str, bytes: &[u8]) -> Result<BundleInfo> {
        let dest = self.code_dir(sha256);
        if dest.is_dir() {
            return bundle_info(&dest);
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let staging = self.root.join("tmp").join(format!(
            "{sha256}.{}.{}.unpack",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = unpack_into(bytes, &staging);
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        match fs::rename(&staging, &dest) {
            Ok(()) => {}
            // Another upload of the same bundle won the race: same content.
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&staging);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(io(format!("renaming to {}", dest.display()))(e));
            }
        }
        bundle_info(&dest)
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

/// What an unpacked bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleInfo {
    pub files: u64,
    pub bytes: u64,
}

fn bundle_error(message: String) -> StoreError {
    StoreError::Io {
        context: "the code bundle is not valid".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    }
}

/// The most a code bundle may unpack to (Lambda's limit for unzipped code).
pub const MAX_UNPACKED_BYTES: u64 = 250 * 1024 * 1024;
/// The most entries (files, directories, links) a bundle may hold.
pub const MAX_ENTRIES: u64 = 50_000;
/// The deepest a path in a bundle may be.
pub const MAX_DEPTH: usize = 64;

/// An I/O error while unpacking: the node's own trouble (a full disk) is not the
/// bundle's fault and says so.
fn unpack_error(shown: &str, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        return StoreError::Io {
            context: format!("unpacking `{shown}` of the code bundle: the node's disk is full"),
            source: e,
        };
    }
    bundle_error(format!("unpacking `{shown}`: {e}"))
}

fn unpack_into(bytes: &[u8], staging: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(staging).map_err(io(format!("creating {}", staging.display())))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(false);
    archive.set_unpack_xattrs(false);
    let entries = archive
        .entries()
        .map_err(|e| bundle_error(format!("not a gzipped tar: {e}")))?;
    let (mut count, mut total) = (0u64, 0u64);
    for entry in entries {
        let mut entry = entry.map_err(|e| bundle_error(format!("reading an entry: {e}")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bundle_error(format!(
                "it holds more than {MAX_ENTRIES} files and directories"
            )));
        }
        total = total.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if total > MAX_UNPACKED_BYTES {
            return Err(bundle_error(format!(
                "it unpacks to more than {} MiB (the limit for a function's code, as on Lambda)",
                MAX_UNPACKED_BYTES / (1024 * 1024)
            )));
        }
        let path = entry
            .path()
            .map_err(|e| bundle_error(format!("an entry has a bad path: {e}")))?
            .into_owned();
        let shown = path.display().to_string();
        if path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bundle_error(format!(
                "entry `{shown}` points outside the bundle"
            )));
        }
        if path.components().count() > MAX_DEPTH {
            return Err(bundle_error(format!(
                "entry `{}…` is nested more than {MAX_DEPTH} levels deep",
                shown.chars().take(80).collect::<String>()
            )));
        }
        use tar::EntryType::*;
        let kind = entry.header().entry_type();
        if !matches!(kind, Regular | Directory | Symlink | Continuous) {
            return Err(bundle_error(format!(
                "entry `{shown}` is a {kind:?}: bundles hold only files, directories and symlinks"
            )));
        }
        let executable = entry.header().mode().unwrap_or(0o644) & 0o111 != 0;
        let unpacked = entry
            .unpack_in(staging)
            .map_err(|e| unpack_error(&shown, e))?;
        if !unpacked {
            return Err(bundle_error(format!(
                "entry `{shown}` points outside the bundle"
            )));
        }
        let target = staging.join(&path);
        let mode = match kind {
            Directory => Some(0o755),
            Symlink => None,
            _ if executable => Some(0o755),
            _ => Some(0o644),
        };
        if let Some(mode) = mode {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io(format!("setting permissions of {}", target.display())))?;
        }
    }
    fs::set_permissions(staging, fs::Permissions::from_mode(0o755))
        .map_err(io(format!("setting permissions of {}", staging.display())))?;
    Ok(())
}

fn bundle_info(dir: &Path) -> Result<BundleInfo> {
    let mut info = BundleInfo { files: 0, bytes: 0 };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io(format!("reading {}", d.display())))? {
            let e = e.map_err(io(format!("reading {}", d.display())))?;
            let meta = fs::symlink_metadata(e.path())
                .map_err(io(format!("reading {}", e.path().display())))?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                info.files += 1;
                info.bytes += meta.len();
            }
        }
    }
    Ok(info)
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

    fn bundle(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw so that bad paths can be tested too.
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn bundles_unpack_readable_and_keep_the_executable_bit() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = ArtifactDir::open(tmp.path()).unwrap();
        let bytes = bundle(&[
            ("app.py", b"def handler(e, c): return e\n", 0o600),
            ("lib/util.py", b"X = 1\n", 0o600),
            ("bootstrap", b"#!/bin/sh\n", 0o700),
        ]);
        assert!(ArtifactDir::is_bundle(&bytes));
        assert!(!ArtifactDir::is_bundle(b"\0asm"));
        let info = dir.unpack_bundle("abc", &bytes).unwrap();
        assert_eq!(info.files, 3);
        let code = dir.code_dir("abc");
        let mode = |p: &str| fs::metadata(code.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("app.py"), 0o644);
        assert_eq!(mode("lib/util.py"), 0o644);
        assert_eq!(mode("bootstrap"), 0o755);
        assert_eq!(fs::read(code.join("lib/util.py")).unwrap(), b"X = 1\n");
        // Idempotent: a second upload of the same bundle is fine.
        dir.unpack_bundle("abc", &bytes).unwrap();
    }

    #[test]
    fn bundles_that_escape_or_are_not_tar_are_refused_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ArtifactDir::open(tmp.path()).unwrap();
        let bytes = bundle(&[("ok.py", b"", 0o644), ("../evil.py", b"x", 0o644)]);
        let e = dir.unpack_bundle("bad", &bytes).unwrap_err().to_string();
        assert!(e.contains("outside the bundle"), "{e}");
        assert!(!dir.code_dir("bad").exists());
        assert!(!tmp.path().join("evil.py").exists());
        let e = dir
            .unpack_bundle("junk", &[0x1f, 0x8b, 1, 2, 3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid"), "{e}");
        assert!(!dir.code_dir("junk").exists());
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    }

    fn unpack_err(bytes: &[u8]) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ArtifactDir::open(tmp.path()).unwrap();
        let e = dir
            .unpack_bundle(&ArtifactDir::sha256(bytes), bytes)
            .unwrap_err()
            .to_string();
        // Nothing is left behind.
        assert_eq!(fs::read_dir(tmp.path().join("code")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
        e
    }

    fn gz(raw: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn bundles_that_unpack_too_big_too_many_or_too_deep_are_refused() {
        // A header claiming 300 MiB is refused before any of it is written.
        let mut h = tar::Header::new_gnu();
        h.set_path("big.bin").unwrap();
        h.set_size(300 * 1024 * 1024);
        h.set_mode(0o644);
        h.set_cksum();
        let e = unpack_err(&gz(h.as_bytes()));
        assert!(e.contains("more than 250 MiB"), "{e}");

        let mut b = tar::Builder::new(Vec::new());
        for i in 0..=MAX_ENTRIES {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            b.append_data(&mut h, format!("d{i}"), &[][..]).unwrap();
        }
        let e = unpack_err(&gz(&b.into_inner().unwrap()));
        assert!(e.contains("more than 50000 files"), "{e}");

        let deep = vec!["a"; MAX_DEPTH + 1].join("/");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, &deep, &b"x"[..]).unwrap();
        let e = unpack_err(&gz(&b.into_inner().unwrap()));
        assert!(e.contains("nested more than 64 levels"), "{e}");
    }

    #[test]
    fn leftovers_of_a_crashed_unpack_are_removed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        ArtifactDir::open(tmp.path()).unwrap();
        fs::create_dir_all(tmp.path().join("tmp/abc.1.2.unpack/x")).unwrap();
        fs::write(tmp.path().join("tmp/f.wasm.1.2.tmp"), b"half").unwrap();
        ArtifactDir::open(tmp.path()).unwrap();
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    }
}
