//! Where objects live: their bytes in immutable blob files (written to a temp file,
//! fsynced, renamed, directory fsynced), their metadata in SQLite (WAL,
//! `synchronous=FULL`). A change is acknowledged, and its event emitted, only after both
//! are durable.
//!
//! Layout under the root:
//! ```text
//! objects.db (+ -wal, -shm)   buckets (and their CORS), objects, uploads, parts,
//!                             completed uploads, counters
//! blobs/<2 hex>/<32 hex>      object data (one blob per single PUT or copy, one per part)
//! tmp/                        uploads in progress; emptied at open
//! ```
//! A blob referenced by no row (a crash between rename and commit, or between commit
//! and unlink) is removed at the next open.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use md5::{Digest, Md5};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::Config;
use crate::checksum::{self, ChecksumAlgorithm, ChecksumHasher, ChecksumType};
use crate::chunked::ByteSource;
use crate::cors::CorsConfig;
use crate::error::{S3Error, StoreError};
use crate::events::{Acks, CreatedKind, EventKind, EventSink, ObjectEvent, RemovedKind};
use crate::names::prefix_successor;
use crate::timefmt::{from_millis, to_millis};

/// A stored object's checksum, as S3 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChecksum {
    pub algorithm: ChecksumAlgorithm,
    /// Base64; a composite multipart checksum ends in `-<parts>`.
    pub value: String,
    pub kind: ChecksumType,
}

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// Without quotes: the MD5 in hex, or `<hex>-<parts>` for a multipart object.
    pub etag: String,
    pub last_modified: OffsetDateTime,
    /// Stored HTTP headers, lowercase: `content-type`, `content-encoding`,
    /// `content-disposition`, `content-language`, `cache-control`, `expires`.
    pub headers: BTreeMap<String, String>,
    /// User metadata (`x-amz-meta-<name>`), names lowercase without the prefix.
    pub metadata: BTreeMap<String, String>,
    pub checksum: Option<ObjectChecksum>,
    /// Number of parts of a multipart object.
    pub parts_count: Option<u32>,
}

impl ObjectInfo {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map_or("binary/octet-stream", String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Segment {
    pub blob: String,
    pub size: u64,
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub created: OffsetDateTime,
    pub region: String,
}

/// Who made a change, for its event.
#[derive(Clone)]
pub(crate) struct ChangeCtx {
    pub sink: Arc<dyn EventSink>,
    pub request_id: String,
    pub source_ip: Option<std::net::IpAddr>,
    pub principal: String,
}

/// A write precondition (`If-None-Match: *`, `If-Match: "etag"`).
#[derive(Debug, Clone, Default)]
pub(crate) enum WriteCondition {
    #[default]
    None,
    IfAbsent,
    IfMatch(String),
}

pub(crate) struct NewObject {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub size: u64,
    pub headers: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub checksum: Option<ObjectChecksum>,
    pub segments: Vec<Segment>,
    pub parts_count: Option<u32>,
    pub condition: WriteCondition,
    pub kind: CreatedKind,
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated: OffsetDateTime,
    pub headers: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
}

#[derive(Debug, Clone)]
pub(crate) struct PartInfo {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    pub blob: String,
    pub checksum: Option<Vec<u8>>,
    pub last_modified: OffsetDateTime,
}

/// An object opened for reading: its metadata, its data files with their sizes, and
/// the pin that keeps them.
pub(crate) type ReadHandle = (ObjectInfo, Vec<(PathBuf, u64)>, PinGuard);

/// A CompleteMultipartUpload request.
pub(crate) struct Completion<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub upload_id: &'a str,
    pub parts: &'a [CompletePart],
    /// A full-object checksum the client sent to be checked.
    pub full_object_checksum: Option<(ChecksumAlgorithm, String)>,
    pub condition: WriteCondition,
}

/// One part named in a CompleteMultipartUpload document.
pub(crate) struct CompletePart {
    pub number: u32,
    pub etag: String,
    pub checksums: Vec<(ChecksumAlgorithm, String)>,
}

pub(crate) enum ListAfter {
    Start,
    Key(String),
    /// After every key under this common prefix.
    Prefix(String),
}

pub(crate) enum ListEntry {
    Object(ObjectInfo),
    Prefix(String),
}

pub(crate) struct ListPage {
    pub entries: Vec<ListEntry>,
    pub truncated: bool,
}

pub(crate) enum DeleteOutcome {
    Deleted,
    Absent,
}

// ---------------------------------------------------------------------------------
// Blobs and pins

/// Blobs being read: deleting one is put off until its last reader is done.
pub(crate) struct Pins {
    blobs: PathBuf,
    state: Mutex<PinState>,
}

#[derive(Default)]
struct PinState {
    counts: HashMap<String, usize>,
    doomed: HashSet<String>,
}

pub(crate) struct PinGuard {
    pins: Arc<Pins>,
    ids: Vec<String>,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut unlink = Vec::new();
        {
            let mut st = self.pins.lock();
            for id in &self.ids {
                if let Some(c) = st.counts.get_mut(id) {
                    *c -= 1;
                    if *c == 0 {
                        st.counts.remove(id);
                        if st.doomed.remove(id) {
                            unlink.push(id.clone());
                        }
                    }
                }
            }
        }
        for id in unlink {
            let _ = fs::remove_file(blob_path(&self.pins.blobs, &id));
        }
    }
}

impl Pins {
    fn lock(&self) -> MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pin(self: &Arc<Self>, ids: Vec<String>) -> PinGuard {
        let mut st = self.lock();
        for id in &ids {
            *st.counts.entry(id.clone()).or_default() += 1;
        }
        drop(st);
        PinGuard {
            pins: self.clone(),
            ids,
        }
    }

    /// Deletes blobs no row refers to any more, now or when their last reader is done.
    fn release(&self, ids: impl IntoIterator<Item = String>) {
        let mut unlink = Vec::new();
        {
            let mut st = self.lock();
            for id in ids {
                if st.counts.contains_key(&id) {
                    st.doomed.insert(id);
                } else {
                    unlink.push(id);
                }
            }
        }
        for id in unlink {
            if let Err(e) = fs::remove_file(blob_path(&self.blobs, &id))
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(blob = %id, error = %e, "could not delete a blob; it will be collected at the next open");
            }
        }
    }
}

fn blob_path(blobs: &Path, id: &str) -> PathBuf {
    blobs.join(&id[..2]).join(id)
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temp file removed when dropped, unless taken.
pub(crate) struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// A promoted blob, deleted when dropped unless a committed row took it.
pub(crate) struct BlobFile {
    pub id: String,
    path: Option<PathBuf>,
}

impl BlobFile {
    fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for BlobFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// What a body is hashed with while it is written.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hashing {
    pub sha256: bool,
    pub checksum: Option<ChecksumAlgorithm>,
}

/// Writes one blob to a temp file, hashing as it goes.
pub(crate) struct BlobWriter {
    file: io::BufWriter<File>,
    tmp: TempFile,
    size: u64,
    md5: Md5,
    sha256: Option<Sha256>,
    checksum: Option<(ChecksumAlgorithm, ChecksumHasher)>,
}

/// The size and digests of written data.
#[derive(Debug, Clone)]
pub(crate) struct Digests {
    pub size: u64,
    pub md5: [u8; 16],
    pub sha256: Option<[u8; 32]>,
    pub checksum: Option<(ChecksumAlgorithm, Vec<u8>)>,
}

/// A written, fsynced temp file and its digests.
pub(crate) struct Staged {
    tmp: TempFile,
    pub digests: Digests,
}

impl BlobWriter {
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        self.md5.update(data);
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some((_, h)) = &mut self.checksum {
            h.update(data);
        }
        Ok(())
    }

    /// Flushes and fsyncs the file.
    pub fn finish(self) -> io::Result<Staged> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(Staged {
            tmp: self.tmp,
            digests: Digests {
                size: self.size,
                md5: self.md5.finalize().into(),
                sha256: self.sha256.map(|h| h.finalize().into()),
                checksum: self.checksum.map(|(a, h)| (a, h.finish())),
            },
        })
    }
}

// ---------------------------------------------------------------------------------
// The store

/// The object store of a node: buckets, objects and multipart uploads under one root
/// directory (one store per root, enforced by a lock file). Its methods block on disk
/// and SQLite: call them from `spawn_blocking` in async code.
pub struct ObjectStore {
    root: PathBuf,
    config: Config,
    db: Mutex<Connection>,
    pins: Arc<Pins>,
    /// Holds an exclusive lock on `<root>/LOCK` while the store is open: a second store
    /// on the same root would collect the first one's uncommitted blobs.
    _lock: File,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    region TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    headers TEXT NOT NULL,
    metadata TEXT NOT NULL,
    checksum_algorithm TEXT,
    checksum_value TEXT,
    checksum_type TEXT,
    segments TEXT NOT NULL,
    parts_count INTEGER,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    initiated_ms INTEGER NOT NULL,
    headers TEXT NOT NULL,
    metadata TEXT NOT NULL,
    checksum_algorithm TEXT,
    checksum_type TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, initiated_ms);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    blob TEXT NOT NULL,
    checksum BLOB,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) WITHOUT ROWID;
-- Uploads completed in the last day, so that a retried CompleteMultipartUpload (its
-- answer lost) gets the same answer again while the object is still the one it made.
CREATE TABLE IF NOT EXISTS completed_uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    parts TEXT NOT NULL,
    segments TEXT NOT NULL,
    completed_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS completed_uploads_by_time ON completed_uploads (completed_ms);
CREATE TABLE IF NOT EXISTS bucket_cors (
    bucket TEXT PRIMARY KEY,
    config TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('sequencer', 0);
";

const OBJECT_COLUMNS: &str = "key, size, etag, last_modified_ms, headers, metadata, \
     checksum_algorithm, checksum_value, checksum_type, segments, parts_count";

fn json_map(s: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn key_string(raw: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(raw).map_err(|_| StoreError::Corrupt("a key is not UTF-8".into()))
}

/// Reads an object row (columns in `OBJECT_COLUMNS` order).
fn object_row(bucket: &str, row: &rusqlite::Row<'_>) -> rusqlite::Result<(ObjectInfo, String)> {
    let key: Vec<u8> = row.get(0)?;
    let headers: String = row.get(4)?;
    let metadata: String = row.get(5)?;
    let algorithm: Option<String> = row.get(6)?;
    let value: Option<String> = row.get(7)?;
    let kind: Option<String> = row.get(8)?;
    let checksum = match (
        algorithm.as_deref().and_then(ChecksumAlgorithm::from_name),
        value,
    ) {
        (Some(algorithm), Some(value)) => Some(ObjectChecksum {
            algorithm,
            value,
            kind: kind
                .as_deref()
                .and_then(ChecksumType::from_name)
                .unwrap_or(ChecksumType::FullObject),
        }),
        _ => None,
    };
    let corrupt = |e: StoreError| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok((
        ObjectInfo {
            bucket: bucket.to_string(),
            key: key_string(key).map_err(corrupt)?,
            size: row.get::<_, i64>(1)? as u64,
            etag: row.get(2)?,
            last_modified: from_millis(row.get(3)?),
            headers: json_map(&headers).map_err(corrupt)?,
            metadata: json_map(&metadata).map_err(corrupt)?,
            checksum,
            parts_count: row.get::<_, Option<i64>>(10)?.map(|n| n as u32),
        },
        row.get(9)?,
    ))
}

fn segments_of(json: &str) -> Result<Vec<Segment>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn next_sequencer(tx: &Transaction<'_>) -> Result<String, StoreError> {
    let v: i64 = tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'sequencer' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    Ok(format!("{v:016X}"))
}

fn no_such_bucket(bucket: &str) -> S3Error {
    S3Error::no_such_bucket("The specified bucket does not exist").with("BucketName", bucket)
}

fn no_such_key(key: &str) -> S3Error {
    S3Error::no_such_key("The specified key does not exist.").with("Key", key)
}

fn no_such_upload(upload_id: &str) -> S3Error {
    S3Error::no_such_upload(
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
    .with("UploadId", upload_id)
}

fn bucket_exists(conn: &Connection, bucket: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM buckets WHERE name = ?1",
            [bucket],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// How long a completed multipart upload is remembered for a retried completion.
const COMPLETION_MEMORY_MS: i64 = 24 * 3600 * 1000;

/// The part list of a completion as it is compared with a retry's: numbers and bare ETags.
fn completion_parts(parts: &[CompletePart]) -> Vec<(u32, String)> {
    parts
        .iter()
        .map(|p| (p.number, normalize_etag(&p.etag)))
        .collect()
}

/// How long [`ObjectStore::open`] waits for the lock before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl ObjectStore {
    /// Opens (creating if needed) the store under `root`, and removes what a crash may
    /// have left: temp files, and blobs no row refers to.
    pub fn open(root: impl AsRef<Path>, config: Config) -> Result<Self, StoreError> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("LOCK"))?;
        // Right after a crash, a child the dead process was still starting (forked, not
        // yet exec'd) may hold the lock for a few milliseconds more: wait a little before
        // concluding that another store has it open.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        while let Err(e) = lock.try_lock() {
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is already open in another object store (is another node running on this data directory?): {e}",
                        root.display()
                    ),
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&tmp)?;
        for i in 0..=255u8 {
            let d = blobs.join(format!("{i:02x}"));
            if !d.exists() {
                fs::create_dir(&d)?;
            }
        }
        fsync_dir(&blobs)?;
        fsync_dir(&root)?;
        let conn = Connection::open(root.join("objects.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        let store = Self {
            root,
            config,
            db: Mutex::new(conn),
            pins: Arc::new(Pins {
                blobs,
                state: Mutex::new(PinState::default()),
            }),
            _lock: lock,
        };
        store.collect_garbage()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn blobs_dir(&self) -> &Path {
        &self.pins.blobs
    }

    fn collect_garbage(&self) -> Result<(), StoreError> {
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let _ = fs::remove_file(entry?.path());
        }
        let mut referenced = HashSet::new();
        {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT segments FROM objects")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for row in rows {
                for s in segments_of(&row?)? {
                    referenced.insert(s.blob);
                }
            }
            let mut stmt = conn.prepare("SELECT blob FROM parts")?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                referenced.insert(row?);
            }
        }
        let mut removed = 0usize;
        for dir in fs::read_dir(self.blobs_dir())? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(dir.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) {
                    fs::remove_file(f.path())?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed blobs left by an interrupted write");
        }
        Ok(())
    }

    // --- writing blobs ---------------------------------------------------------------

    pub(crate) fn blob_writer(&self, hashing: Hashing) -> io::Result<BlobWriter> {
        let path = self.root.join("tmp").join(new_id());
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(BlobWriter {
            file: io::BufWriter::with_capacity(256 * 1024, file),
            tmp: TempFile(Some(path)),
            size: 0,
            md5: Md5::new(),
            sha256: hashing.sha256.then(Sha256::new),
            checksum: hashing.checksum.map(|a| (a, a.hasher())),
        })
    }

    /// Moves a staged file into the blob directory, durably.
    pub(crate) fn promote(&self, mut staged: Staged) -> io::Result<(BlobFile, Digests)> {
        let id = new_id();
        let dest = blob_path(self.blobs_dir(), &id);
        let Some(tmp) = staged.tmp.0.take() else {
            return Err(io::Error::other("staged file already taken"));
        };
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let blob = BlobFile {
            id,
            path: Some(dest.clone()),
        };
        fsync_dir(dest.parent().unwrap_or(self.blobs_dir()))?;
        Ok((blob, staged.digests))
    }

    /// Streams a request payload (or a form's file) into a staged temp file. The network side runs here;
    /// hashing and writing run on a blocking thread, with a bounded queue between them.
    pub(crate) async fn ingest(
        self: &Arc<Self>,
        payload: &mut impl ByteSource,
        hashing: Hashing,
        max_size: u64,
    ) -> Result<Staged, S3Error> {
        let store = self.clone();
        let mut writer = tokio::task::spawn_blocking(move || store.blob_writer(hashing))
            .await
            .map_err(|e| S3Error::internal(e.to_string()))??;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let handle = tokio::task::spawn_blocking(move || -> io::Result<Staged> {
            while let Some(b) = rx.blocking_recv() {
                writer.write(&b)?;
            }
            writer.finish()
        });
        let mut total = 0u64;
        let mut failure = None;
        loop {
            match payload.next_bytes().await {
                Ok(Some(b)) => {
                    total += b.len() as u64;
                    if total > max_size {
                        failure = Some(too_large(max_size));
                        break;
                    }
                    if tx.send(b).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = handle.await.map_err(|e| S3Error::internal(e.to_string()))?;
        if let Some(e) = failure {
            return Err(e); // `written` (if any) is dropped and its temp file removed
        }
        Ok(written?)
    }

    // --- buckets ---------------------------------------------------------------------

    pub fn create_bucket(&self, name: &str, region: &str) -> Result<(), S3Error> {
        if let Some(why) = crate::names::bucket_name_error(name) {
            return Err(S3Error::invalid_bucket_name(format!(
                "The specified bucket is not valid: {why}."
            ))
            .with("BucketName", name));
        }
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO buckets (name, created_ms, region) VALUES (?1, ?2, ?3)",
            params![name, to_millis(OffsetDateTime::now_utc()), region],
        )?;
        if n == 0 {
            return Err(S3Error::bucket_already_owned_by_you(
                "Your previous request to create the named bucket succeeded and you already own it.",
            )
            .with("BucketName", name));
        }
        Ok(())
    }

    pub fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT created_ms, region FROM buckets WHERE name = ?1",
                [name],
                |r| {
                    Ok(BucketInfo {
                        name: name.to_string(),
                        created: from_millis(r.get(0)?),
                        region: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, created_ms, region FROM buckets ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(BucketInfo {
                name: r.get(0)?,
                created: from_millis(r.get(1)?),
                region: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an empty bucket, aborting its multipart uploads.
    pub fn delete_bucket(&self, name: &str) -> Result<(), S3Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if !bucket_exists(&tx, name)? {
            return Err(no_such_bucket(name));
        }
        let has_objects = tx
            .query_row(
                "SELECT 1 FROM objects WHERE bucket = ?1 LIMIT 1",
                [name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if has_objects {
            return Err(
                S3Error::bucket_not_empty("The bucket you tried to delete is not empty")
                    .with("BucketName", name),
            );
        }
        let blobs: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT p.blob FROM parts p JOIN uploads u ON u.upload_id = p.upload_id WHERE u.bucket = ?1",
            )?;
            stmt.query_map([name], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        tx.execute(
            "DELETE FROM parts WHERE upload_id IN (SELECT upload_id FROM uploads WHERE bucket = ?1)",
            [name],
        )?;
        tx.execute("DELETE FROM uploads WHERE bucket = ?1", [name])?;
        tx.execute("DELETE FROM completed_uploads WHERE bucket = ?1", [name])?;
        tx.execute("DELETE FROM bucket_cors WHERE bucket = ?1", [name])?;
        tx.execute("DELETE FROM buckets WHERE name = ?1", [name])?;
        tx.commit()?;
        drop(conn);
        self.pins.release(blobs);
        Ok(())
    }

    /// Sets (replacing) a bucket's CORS configuration.
    pub(crate) fn put_bucket_cors(&self, bucket: &str, config: &CorsConfig) -> Result<(), S3Error> {
        let conn = self.conn();
        if !bucket_exists(&conn, bucket)? {
            return Err(no_such_bucket(bucket));
        }
        conn.execute(
            "INSERT OR REPLACE INTO bucket_cors (bucket, config) VALUES (?1, ?2)",
            params![bucket, to_json(config)],
        )?;
        Ok(())
    }

    /// A bucket's CORS configuration: `Err` NoSuchBucket, `Ok(None)` if it has none.
    pub(crate) fn bucket_cors(&self, bucket: &str) -> Result<Option<CorsConfig>, S3Error> {
        let conn = self.conn();
        let row: Option<String> = conn
            .query_row(
                "SELECT config FROM bucket_cors WHERE bucket = ?1",
                [bucket],
                |r| r.get(0),
            )
            .optional()?;
        match row {
            Some(json) => Ok(Some(
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None if bucket_exists(&conn, bucket)? => Ok(None),
            None => Err(no_such_bucket(bucket)),
        }
    }

    pub(crate) fn delete_bucket_cors(&self, bucket: &str) -> Result<(), S3Error> {
        let conn = self.conn();
        if !bucket_exists(&conn, bucket)? {
            return Err(no_such_bucket(bucket));
        }
        conn.execute("DELETE FROM bucket_cors WHERE bucket = ?1", [bucket])?;
        Ok(())
    }

    // --- objects ---------------------------------------------------------------------

    fn lookup(
        conn: &Connection,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectInfo, Vec<Segment>)>, StoreError> {
        let row = conn
            .query_row(
                &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"),
                params![bucket, key.as_bytes()],
                |r| object_row(bucket, r),
            )
            .optional()?;
        match row {
            Some((info, segs)) => Ok(Some((info, segments_of(&segs)?))),
            None => Ok(None),
        }
    }

    /// The metadata of an object, if it exists.
    pub fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(Self::lookup(&self.conn(), bucket, key)?.map(|(i, _)| i))
    }

    /// An object's metadata, its segments, and a pin that keeps its data readable
    /// until dropped, even if the object is overwritten or deleted meanwhile.
    pub(crate) fn get_for_read(&self, bucket: &str, key: &str) -> Result<ReadHandle, S3Error> {
        let conn = self.conn();
        let Some((info, segments)) = Self::lookup(&conn, bucket, key)? else {
            if !bucket_exists(&conn, bucket)? {
                return Err(no_such_bucket(bucket));
            }
            return Err(no_such_key(key));
        };
        let pin = self
            .pins
            .pin(segments.iter().map(|s| s.blob.clone()).collect());
        drop(conn);
        let files = segments
            .iter()
            .map(|s| (blob_path(self.blobs_dir(), &s.blob), s.size))
            .collect();
        Ok((info, files, pin))
    }

    /// Opens an object for reading with `std::io::Read` (for callers inside the node).
    pub fn open_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectInfo, ObjectReader)>, StoreError> {
        match self.get_for_read(bucket, key) {
            Ok((info, files, pin)) => Ok(Some((
                info,
                ObjectReader {
                    inner: SegmentReader::new(files),
                    _pin: pin,
                },
            ))),
            Err(e) if e.status == http::StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(StoreError::Corrupt(e.message)),
        }
    }

    /// Commits a new object (replacing any of the same key) and emits its event; the
    /// response must wait for the returned acknowledgement.
    /// `blobs` are kept once the row that refers to them is committed.
    pub(crate) fn commit_object(
        &self,
        new: NewObject,
        blobs: Vec<BlobFile>,
        ctx: &ChangeCtx,
    ) -> Result<(ObjectInfo, Acks), S3Error> {
        self.commit_object_with(new, blobs, ctx, |_| Ok(()))
    }

    /// Deletes objects in one transaction; each deletion gets its event (the response
    /// must wait for their acknowledgements).
    pub(crate) fn delete_objects(
        &self,
        bucket: &str,
        keys: &[String],
        ctx: &ChangeCtx,
    ) -> Result<(Vec<DeleteOutcome>, Acks), S3Error> {
        let now = OffsetDateTime::now_utc();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if !bucket_exists(&tx, bucket)? {
            return Err(no_such_bucket(bucket));
        }
        let mut outcomes = Vec::with_capacity(keys.len());
        let mut removed = Vec::new();
        let mut freed = Vec::new();
        for key in keys {
            let segs: Option<String> = tx
                .query_row(
                    "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING segments",
                    params![bucket, key.as_bytes()],
                    |r| r.get(0),
                )
                .optional()?;
            match segs {
                Some(s) => {
                    freed.extend(segments_of(&s)?.into_iter().map(|s| s.blob));
                    let sequencer = next_sequencer(&tx)?;
                    removed.push((key.clone(), sequencer));
                    outcomes.push(DeleteOutcome::Deleted);
                }
                None => outcomes.push(DeleteOutcome::Absent),
            }
        }
        tx.commit()?;
        let mut acks = Acks::default();
        for (key, sequencer) in removed {
            acks.push(ctx.sink.send(ObjectEvent {
                kind: EventKind::ObjectRemoved(RemovedKind::Delete),
                bucket: bucket.to_string(),
                key,
                size: 0,
                etag: String::new(),
                sequencer,
                time: now,
                request_id: ctx.request_id.clone(),
                source_ip: ctx.source_ip,
                principal: ctx.principal.clone(),
            }));
        }
        drop(conn);
        self.pins.release(freed);
        Ok((outcomes, acks))
    }

    /// Lists a bucket's keys in UTF-8 byte order, rolling keys that contain the
    /// delimiter after the prefix up into common prefixes.
    pub(crate) fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: usize,
        after: ListAfter,
    ) -> Result<ListPage, S3Error> {
        let conn = self.conn();
        if !bucket_exists(&conn, bucket)? {
            return Err(no_such_bucket(bucket));
        }
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let upper = prefix_successor(prefix.as_bytes());
        // (bound, inclusive)
        let mut cursor: (Vec<u8>, bool) = (prefix.as_bytes().to_vec(), true);
        match &after {
            ListAfter::Start => {}
            ListAfter::Key(k) => {
                if k.as_bytes() >= prefix.as_bytes() {
                    cursor = (k.as_bytes().to_vec(), false);
                }
            }
            ListAfter::Prefix(p) => match prefix_successor(p.as_bytes()) {
                Some(s) if s.as_slice() > prefix.as_bytes() => cursor = (s, true),
                Some(_) => {}
                None => {
                    return Ok(ListPage {
                        entries: Vec::new(),
                        truncated: false,
                    });
                }
            },
        }
        let mut entries = Vec::new();
        if max_keys == 0 {
            return Ok(ListPage {
                entries,
                truncated: false,
            });
        }
        const BATCH: usize = 1000;
        let sql_incl = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) ORDER BY key LIMIT ?4"
        );
        let sql_excl = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key > ?2 AND (?3 IS NULL OR key < ?3) ORDER BY key LIMIT ?4"
        );
        'outer: loop {
            let sql = if cursor.1 { &sql_incl } else { &sql_excl };
            let mut stmt = conn.prepare_cached(sql)?;
            let rows: Vec<(ObjectInfo, String)> = stmt
                .query_map(
                    params![bucket, cursor.0, upper.as_deref(), BATCH as i64],
                    |r| object_row(bucket, r),
                )?
                .collect::<Result<_, _>>()?;
            let fetched = rows.len();
            for (info, _) in rows {
                if let Some(d) = delimiter
                    && let Some(pos) = info.key[prefix.len()..].find(d)
                {
                    let cp = info.key[..prefix.len() + pos + d.len()].to_string();
                    if entries.len() == max_keys {
                        return Ok(ListPage {
                            entries,
                            truncated: true,
                        });
                    }
                    match prefix_successor(cp.as_bytes()) {
                        Some(s) => cursor = (s, true),
                        None => {
                            entries.push(ListEntry::Prefix(cp));
                            break 'outer;
                        }
                    }
                    entries.push(ListEntry::Prefix(cp));
                    continue 'outer;
                }
                if entries.len() == max_keys {
                    return Ok(ListPage {
                        entries,
                        truncated: true,
                    });
                }
                cursor = (info.key.as_bytes().to_vec(), false);
                entries.push(ListEntry::Object(info));
            }
            if fetched < BATCH {
                break;
            }
        }
        Ok(ListPage {
            entries,
            truncated: false,
        })
    }

    // --- copies ------------------------------------------------------------------------

    /// Copies `range` (inclusive) of an object's data into a new blob, computing its
    /// MD5 and, if asked, a checksum. Runs on a blocking thread.
    pub(crate) fn copy_data(
        &self,
        files: &[(PathBuf, u64)],
        range: Option<(u64, u64)>,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<(BlobFile, Digests), S3Error> {
        let mut writer = self.blob_writer(Hashing {
            sha256: false,
            checksum,
        })?;
        let mut reader = SegmentReader::new(files.to_vec());
        let total: u64 = files.iter().map(|f| f.1).sum();
        let (start, end) = range.unwrap_or((0, total.saturating_sub(1)));
        let mut remaining = if total == 0 { 0 } else { end - start + 1 };
        reader.seek_to(start)?;
        let mut buf = vec![0u8; 256 * 1024];
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            let n = reader.read(&mut buf[..want])?;
            if n == 0 {
                return Err(StoreError::Corrupt("a blob is shorter than recorded".into()).into());
            }
            writer.write(&buf[..n])?;
            remaining -= n as u64;
        }
        let staged = writer.finish()?;
        Ok(self.promote(staged)?)
    }

    // --- multipart ---------------------------------------------------------------------

    pub(crate) fn create_upload(&self, upload: &Upload) -> Result<(), S3Error> {
        let conn = self.conn();
        if !bucket_exists(&conn, &upload.bucket)? {
            return Err(no_such_bucket(&upload.bucket));
        }
        conn.execute(
            "INSERT INTO uploads (upload_id, bucket, key, initiated_ms, headers, metadata, checksum_algorithm, checksum_type) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                upload.upload_id,
                upload.bucket,
                upload.key.as_bytes(),
                to_millis(upload.initiated),
                to_json(&upload.headers),
                to_json(&upload.metadata),
                upload.checksum.map(|c| c.0.name()),
                upload.checksum.map(|c| c.1.name()),
            ],
        )?;
        Ok(())
    }

    fn upload_row(conn: &Connection, upload_id: &str) -> Result<Option<Upload>, StoreError> {
        let row = conn
            .query_row(
                "SELECT bucket, key, initiated_ms, headers, metadata, checksum_algorithm, checksum_type \
                 FROM uploads WHERE upload_id = ?1",
                [upload_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((bucket, key, initiated, headers, metadata, alg, kind)) = row else {
            return Ok(None);
        };
        let checksum = alg
            .as_deref()
            .and_then(ChecksumAlgorithm::from_name)
            .map(|a| {
                (
                    a,
                    kind.as_deref()
                        .and_then(ChecksumType::from_name)
                        .unwrap_or(ChecksumType::Composite),
                )
            });
        Ok(Some(Upload {
            upload_id: upload_id.to_string(),
            bucket,
            key: key_string(key)?,
            initiated: from_millis(initiated),
            headers: json_map(&headers)?,
            metadata: json_map(&metadata)?,
            checksum,
        }))
    }

    /// The upload, if it exists for this bucket and key.
    pub(crate) fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Upload, S3Error> {
        let conn = self.conn();
        match Self::upload_row(&conn, upload_id)? {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => Err(no_such_upload(upload_id)),
        }
    }

    pub(crate) fn commit_part(
        &self,
        upload: &Upload,
        number: u32,
        digests: &Digests,
        blob: BlobFile,
    ) -> Result<String, S3Error> {
        let etag = hex::encode(digests.md5);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if Self::upload_row(&tx, &upload.upload_id)?.is_none() {
            return Err(no_such_upload(&upload.upload_id));
        }
        let old: Option<String> = tx
            .query_row(
                "SELECT blob FROM parts WHERE upload_id = ?1 AND part_number = ?2",
                params![upload.upload_id, number],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT OR REPLACE INTO parts (upload_id, part_number, size, etag, blob, checksum, last_modified_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                upload.upload_id,
                number,
                digests.size as i64,
                etag,
                blob.id,
                digests.checksum.as_ref().map(|c| c.1.clone()),
                to_millis(OffsetDateTime::now_utc()),
            ],
        )?;
        tx.commit()?;
        blob.keep();
        drop(conn);
        self.pins.release(old);
        Ok(etag)
    }

    fn parts_of(conn: &Connection, upload_id: &str) -> Result<Vec<PartInfo>, StoreError> {
        let mut stmt = conn.prepare(
            "SELECT part_number, size, etag, blob, checksum, last_modified_ms FROM parts \
             WHERE upload_id = ?1 ORDER BY part_number",
        )?;
        let rows = stmt.query_map([upload_id], |r| {
            Ok(PartInfo {
                number: r.get::<_, i64>(0)? as u32,
                size: r.get::<_, i64>(1)? as u64,
                etag: r.get(2)?,
                blob: r.get(3)?,
                checksum: r.get(4)?,
                last_modified: from_millis(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn list_parts(&self, upload: &Upload) -> Result<Vec<PartInfo>, S3Error> {
        Ok(Self::parts_of(&self.conn(), &upload.upload_id)?)
    }

    /// Completes an upload: validates the named parts, commits the object made of them,
    /// drops the upload and the parts it did not use.
    pub(crate) fn complete_upload(
        &self,
        req: Completion<'_>,
        ctx: &ChangeCtx,
    ) -> Result<(ObjectInfo, Acks), S3Error> {
        let Completion {
            bucket,
            key,
            upload_id,
            parts: requested,
            full_object_checksum,
            condition,
        } = req;
        // Validation reads the parts; the commit re-checks the upload in its transaction.
        let upload = match self.upload(bucket, key, upload_id) {
            Ok(u) => u,
            Err(e) if e.code == "NoSuchUpload" => {
                return self
                    .repeat_completion(bucket, key, upload_id, requested, ctx)?
                    .ok_or(e);
            }
            Err(e) => return Err(e),
        };
        let parts = self.list_parts(&upload)?;
        if requested.is_empty() {
            return Err(S3Error::malformed_xml(
                "The XML you provided was not well-formed or did not validate against our published schema.",
            ));
        }
        let by_number: HashMap<u32, &PartInfo> = parts.iter().map(|p| (p.number, p)).collect();
        let mut chosen: Vec<&PartInfo> = Vec::with_capacity(requested.len());
        let mut last = 0u32;
        for req in requested {
            if req.number <= last {
                return Err(S3Error::invalid_part_order(
                    "The list of parts was not in ascending order. Parts must be ordered by part number.",
                )
                .with("UploadId", upload_id));
            }
            last = req.number;
            let Some(part) = by_number.get(&req.number) else {
                return Err(invalid_part(upload_id, req.number));
            };
            if normalize_etag(&req.etag) != part.etag {
                return Err(invalid_part(upload_id, req.number));
            }
            for (alg, value) in &req.checksums {
                let matches = upload.checksum.is_some_and(|(a, _)| a == *alg)
                    && part
                        .checksum
                        .as_ref()
                        .is_some_and(|c| checksum::to_base64(c) == value.trim());
                if !matches {
                    return Err(invalid_part(upload_id, req.number));
                }
            }
            chosen.push(part);
        }
        for (i, part) in chosen.iter().enumerate() {
            if i + 1 < chosen.len() && part.size < self.config.min_part_size {
                return Err(S3Error::entity_too_small(
                    "Your proposed upload is smaller than the minimum allowed object size.",
                )
                .with("ProposedSize", part.size.to_string())
                .with("MinSizeAllowed", self.config.min_part_size.to_string())
                .with("PartNumber", part.number.to_string())
                .with("ETag", format!("\"{}\"", part.etag)));
            }
        }
        let mut md5s = Md5::new();
        for part in &chosen {
            let raw = hex::decode(&part.etag).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            md5s.update(&raw);
        }
        let etag = format!("{}-{}", hex::encode(md5s.finalize()), chosen.len());
        let size: u64 = chosen.iter().map(|p| p.size).sum();
        let checksum = match upload.checksum {
            None => None,
            Some((alg, kind)) => {
                let digests: Option<Vec<Vec<u8>>> =
                    chosen.iter().map(|p| p.checksum.clone()).collect();
                let digests = digests.ok_or_else(|| {
                    S3Error::invalid_request("a part was uploaded without the upload's checksum")
                })?;
                let value = match kind {
                    ChecksumType::Composite => checksum::composite(alg, &digests),
                    ChecksumType::FullObject => {
                        let sized: Vec<(Vec<u8>, u64)> = digests
                            .into_iter()
                            .zip(chosen.iter().map(|p| p.size))
                            .collect();
                        let raw = checksum::combine_full_object(alg, &sized).ok_or_else(|| {
                            S3Error::invalid_request("FULL_OBJECT checksums need a CRC algorithm")
                        })?;
                        checksum::to_base64(&raw)
                    }
                };
                Some(ObjectChecksum {
                    algorithm: alg,
                    value,
                    kind,
                })
            }
        };
        if let Some((alg, given)) = full_object_checksum {
            let ok = checksum.as_ref().is_some_and(|c| {
                c.algorithm == alg && c.value.split('-').next() == given.trim().split('-').next()
            });
            if !ok {
                return Err(S3Error::bad_digest(format!(
                    "The {} you specified did not match the calculated checksum.",
                    alg.name()
                )));
            }
        }
        let segments: Vec<Segment> = chosen
            .iter()
            .map(|p| Segment {
                blob: p.blob.clone(),
                size: p.size,
            })
            .collect();
        let used: HashSet<String> = segments.iter().map(|s| s.blob.clone()).collect();
        let chosen_blobs: Vec<(u32, String)> =
            chosen.iter().map(|p| (p.number, p.blob.clone())).collect();
        let mut unused: Vec<String> = Vec::new();
        let record_parts = to_json(&completion_parts(requested));
        let record_segments = to_json(&segments);
        let new = NewObject {
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag,
            size,
            headers: upload.headers.clone(),
            metadata: upload.metadata.clone(),
            checksum,
            parts_count: Some(chosen.len() as u32),
            segments,
            condition,
            kind: CreatedKind::CompleteMultipartUpload,
        };
        let committed = self.commit_object_with(new, Vec::new(), ctx, |tx| {
            // A part uploaded again since validation would leave the object pointing at
            // replaced data: check under the lock that each chosen part is unchanged.
            for (number, blob) in &chosen_blobs {
                let current: Option<String> = tx
                    .query_row(
                        "SELECT blob FROM parts WHERE upload_id = ?1 AND part_number = ?2",
                        params![upload_id, number],
                        |r| r.get(0),
                    )
                    .optional()?;
                if current.as_ref() != Some(blob) {
                    return Err(invalid_part(upload_id, *number));
                }
            }
            let mut stmt = tx.prepare("SELECT blob FROM parts WHERE upload_id = ?1")?;
            let all: Vec<String> = stmt
                .query_map([upload_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            unused = all.into_iter().filter(|b| !used.contains(b)).collect();
            let n = tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])?;
            if n == 0 {
                return Err(no_such_upload(upload_id));
            }
            tx.execute("DELETE FROM parts WHERE upload_id = ?1", [upload_id])?;
            let now = to_millis(OffsetDateTime::now_utc());
            tx.execute(
                "DELETE FROM completed_uploads WHERE completed_ms < ?1",
                [now - COMPLETION_MEMORY_MS],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO completed_uploads (upload_id, bucket, key, parts, segments, completed_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    upload_id,
                    bucket,
                    key.as_bytes(),
                    record_parts,
                    record_segments,
                    now
                ],
            )?;
            Ok(())
        })?;
        self.pins.release(unused);
        Ok(committed)
    }

    /// A CompleteMultipartUpload for an upload completed within the last day, naming the
    /// same parts, while the object it made is still there: S3 answers it as it answered
    /// the first (SDKs retry a completion whose answer was lost). The object-created
    /// event is emitted again: the first answer may have been the 503 of an
    /// unacknowledged event, and this success must mean the trigger is handed on (at
    /// least once, as with a retried PUT). None if it is not such a retry.
    fn repeat_completion(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        requested: &[CompletePart],
        ctx: &ChangeCtx,
    ) -> Result<Option<(ObjectInfo, Acks)>, S3Error> {
        let now = OffsetDateTime::now_utc();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let record: Option<(String, Vec<u8>, String, String, i64)> = tx
            .query_row(
                "SELECT bucket, key, parts, segments, completed_ms FROM completed_uploads WHERE upload_id = ?1",
                [upload_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((b, k, parts, segments, completed_ms)) = record else {
            return Ok(None);
        };
        if b != bucket
            || k != key.as_bytes()
            || completed_ms < to_millis(now) - COMPLETION_MEMORY_MS
        {
            return Ok(None);
        }
        let parts: Vec<(u32, String)> =
            serde_json::from_str(&parts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if parts != completion_parts(requested) {
            return Ok(None);
        }
        // Overwritten or deleted since (blob ids are never reused): no longer this
        // upload's object.
        let Some((info, current)) = Self::lookup(&tx, bucket, key)? else {
            return Ok(None);
        };
        if current != segments_of(&segments)? {
            return Ok(None);
        }
        let sequencer = next_sequencer(&tx)?;
        tx.commit()?;
        let acks = Self::emit_created(
            &info,
            CreatedKind::CompleteMultipartUpload,
            now,
            sequencer,
            ctx,
        );
        drop(conn);
        Ok(Some((info, acks)))
    }

    /// `commit_object`, with extra statements run in its transaction first.
    fn commit_object_with(
        &self,
        new: NewObject,
        blobs: Vec<BlobFile>,
        ctx: &ChangeCtx,
        extra: impl FnOnce(&Transaction<'_>) -> Result<(), S3Error>,
    ) -> Result<(ObjectInfo, Acks), S3Error> {
        // Run `extra` and the object commit under one lock and one transaction by
        // doing both here.
        let now = OffsetDateTime::now_utc();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        extra(&tx)?;
        let result = Self::write_object_row(&tx, &new, now)?;
        let sequencer = next_sequencer(&tx)?;
        tx.commit()?;
        for b in blobs {
            b.keep();
        }
        let committed = self.after_commit(new, now, sequencer, ctx);
        drop(conn);
        if let Some(segs) = result {
            self.pins.release(segs.into_iter().map(|s| s.blob));
        }
        Ok(committed)
    }

    /// Checks the condition and writes the row; the replaced object's segments.
    fn write_object_row(
        tx: &Transaction<'_>,
        new: &NewObject,
        now: OffsetDateTime,
    ) -> Result<Option<Vec<Segment>>, S3Error> {
        if !bucket_exists(tx, &new.bucket)? {
            return Err(no_such_bucket(&new.bucket));
        }
        let old = Self::lookup(tx, &new.bucket, &new.key)?;
        match (&new.condition, &old) {
            (WriteCondition::IfAbsent, Some(_)) => {
                return Err(S3Error::precondition_failed(
                    "At least one of the pre-conditions you specified did not hold",
                )
                .with("Condition", "If-None-Match"));
            }
            (WriteCondition::IfMatch(_), None) => return Err(no_such_key(&new.key)),
            (WriteCondition::IfMatch(etag), Some((info, _))) if !etag_matches(etag, &info.etag) => {
                return Err(S3Error::precondition_failed(
                    "At least one of the pre-conditions you specified did not hold",
                )
                .with("Condition", "If-Match"));
            }
            _ => {}
        }
        let (alg, value, kind) = match &new.checksum {
            Some(c) => (
                Some(c.algorithm.name()),
                Some(c.value.clone()),
                Some(c.kind.name()),
            ),
            None => (None, None, None),
        };
        tx.execute(
            "INSERT OR REPLACE INTO objects (bucket, key, size, etag, last_modified_ms, headers, metadata, \
             checksum_algorithm, checksum_value, checksum_type, segments, parts_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                new.bucket,
                new.key.as_bytes(),
                new.size as i64,
                new.etag,
                to_millis(now),
                to_json(&new.headers),
                to_json(&new.metadata),
                alg,
                value,
                kind,
                to_json(&new.segments),
                new.parts_count.map(i64::from),
            ],
        )?;
        Ok(old.map(|(_, s)| s))
    }

    fn after_commit(
        &self,
        new: NewObject,
        now: OffsetDateTime,
        sequencer: String,
        ctx: &ChangeCtx,
    ) -> (ObjectInfo, Acks) {
        let info = ObjectInfo {
            bucket: new.bucket,
            key: new.key,
            size: new.size,
            etag: new.etag,
            last_modified: from_millis(to_millis(now)),
            headers: new.headers,
            metadata: new.metadata,
            checksum: new.checksum,
            parts_count: new.parts_count,
        };
        let acks = Self::emit_created(&info, new.kind, now, sequencer, ctx);
        (info, acks)
    }

    /// Sends the object-created event of a commit (the commit lock held).
    fn emit_created(
        info: &ObjectInfo,
        kind: CreatedKind,
        now: OffsetDateTime,
        sequencer: String,
        ctx: &ChangeCtx,
    ) -> Acks {
        let mut acks = Acks::default();
        acks.push(ctx.sink.send(ObjectEvent {
            kind: EventKind::ObjectCreated(kind),
            bucket: info.bucket.clone(),
            key: info.key.clone(),
            size: info.size,
            etag: info.etag.clone(),
            sequencer,
            time: now,
            request_id: ctx.request_id.clone(),
            source_ip: ctx.source_ip,
            principal: ctx.principal.clone(),
        }));
        acks
    }

    pub(crate) fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), S3Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        match Self::upload_row(&tx, upload_id)? {
            Some(u) if u.bucket == bucket && u.key == key => {}
            _ => return Err(no_such_upload(upload_id)),
        }
        let blobs: Vec<String> = {
            let mut stmt = tx.prepare("SELECT blob FROM parts WHERE upload_id = ?1")?;
            stmt.query_map([upload_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        tx.execute("DELETE FROM parts WHERE upload_id = ?1", [upload_id])?;
        tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])?;
        tx.commit()?;
        drop(conn);
        self.pins.release(blobs);
        Ok(())
    }

    /// Uploads in progress in a bucket, by key then initiation, after the markers.
    pub(crate) fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        upload_id_marker: &str,
        max: usize,
    ) -> Result<(Vec<Upload>, bool), S3Error> {
        let conn = self.conn();
        if !bucket_exists(&conn, bucket)? {
            return Err(no_such_bucket(bucket));
        }
        let mut stmt = conn.prepare(
            "SELECT upload_id, key FROM uploads WHERE bucket = ?1 ORDER BY key, initiated_ms, upload_id",
        )?;
        let rows: Vec<(String, Vec<u8>)> = stmt
            .query_map([bucket], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        let mut past_marker = key_marker.is_empty();
        for (id, key) in rows {
            let key = key_string(key)?;
            if !key.starts_with(prefix) {
                continue;
            }
            if !past_marker {
                if key.as_str() < key_marker {
                    continue;
                }
                if key == key_marker
                    && (upload_id_marker.is_empty() || id.as_str() <= upload_id_marker)
                {
                    continue;
                }
                past_marker = true;
            }
            if out.len() == max {
                return Ok((out, true));
            }
            if let Some(u) = Self::upload_row(&conn, &id)? {
                out.push(u);
            }
        }
        Ok((out, false))
    }
}

fn invalid_part(upload_id: &str, number: u32) -> S3Error {
    S3Error::invalid_part(
        "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
    )
    .with("UploadId", upload_id)
    .with("PartNumber", number.to_string())
}

fn too_large(max: u64) -> S3Error {
    S3Error::entity_too_large("Your proposed upload exceeds the maximum allowed size")
        .with("MaxSizeAllowed", max.to_string())
}

/// An ETag as clients send it (quoted or not, maybe weak) as stored (bare).
pub(crate) fn normalize_etag(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.trim_matches('"').to_string()
}

/// Whether an `If-Match`-style list (`"a", "b"` or `*`) names `etag`.
pub(crate) fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || normalize_etag(t) == etag)
}

/// Reads a sequence of blob files as one stream.
struct SegmentReader {
    files: Vec<(PathBuf, u64)>,
    index: usize,
    current: Option<File>,
}

impl SegmentReader {
    fn new(files: Vec<(PathBuf, u64)>) -> Self {
        Self {
            files,
            index: 0,
            current: None,
        }
    }

    fn seek_to(&mut self, mut offset: u64) -> io::Result<()> {
        self.index = 0;
        while self.index < self.files.len() && offset >= self.files[self.index].1 {
            offset -= self.files[self.index].1;
            self.index += 1;
        }
        self.current = None;
        if self.index < self.files.len() {
            let mut f = File::open(&self.files[self.index].0)?;
            f.seek(SeekFrom::Start(offset))?;
            self.current = Some(f);
        }
        Ok(())
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                if self.index >= self.files.len() {
                    return Ok(0);
                }
                self.current = Some(File::open(&self.files[self.index].0)?);
            }
            let n = self.current.as_mut().map_or(Ok(0), |f| f.read(buf))?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.current = None;
            self.index += 1;
        }
    }
}

/// An object's data as `std::io::Read`. The data stays readable while this lives,
/// even if the object is overwritten or deleted.
pub struct ObjectReader {
    inner: SegmentReader,
    _pin: PinGuard,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::DiscardEvents;
    use crate::names::{
        listing_encode, notification_decode, notification_encode, percent_decode, uri_encode,
    };
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ctx() -> ChangeCtx {
        ChangeCtx {
            sink: Arc::new(DiscardEvents),
            request_id: "test".into(),
            source_ip: None,
            principal: "test".into(),
        }
    }

    #[test]
    fn a_second_store_waits_for_the_lock_then_gives_up_naming_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let first = ObjectStore::open(dir.path(), crate::Config::default()).unwrap();
        // Released within the wait (a dead node's last child going away): the next opens.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = ObjectStore::open(dir.path(), crate::Config::default()).unwrap();
        release.join().unwrap();
        // Held for good: an error after the wait, saying what to check.
        let started = std::time::Instant::now();
        let err = ObjectStore::open(dir.path(), crate::Config::default())
            .err()
            .expect("the lock is held");
        assert!(started.elapsed() >= LOCK_WAIT);
        assert!(
            err.to_string()
                .contains("is another node running on this data directory?"),
            "{err}"
        );
        drop(second);
    }

    fn put_empty(store: &ObjectStore, bucket: &str, key: &str) {
        let new = NewObject {
            bucket: bucket.into(),
            key: key.into(),
            etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
            size: 0,
            headers: BTreeMap::new(),
            metadata: BTreeMap::new(),
            checksum: None,
            segments: Vec::new(),
            parts_count: None,
            condition: WriteCondition::None,
            kind: CreatedKind::Put,
        };
        let _committed = store.commit_object(new, Vec::new(), &ctx()).unwrap();
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Entry {
        Key(String),
        Prefix(String),
    }

    /// What S3 lists: keys in UTF-8 byte order, rolled up at the delimiter.
    fn model(keys: &BTreeSet<String>, prefix: &str, delimiter: Option<&str>) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for k in keys {
            let Some(rest) = k.strip_prefix(prefix) else {
                continue;
            };
            match delimiter.and_then(|d| rest.find(d).map(|p| (d, p))) {
                Some((d, p)) => {
                    let cp = Entry::Prefix(k[..prefix.len() + p + d.len()].to_string());
                    if out.last() != Some(&cp) {
                        out.push(cp);
                    }
                }
                None => out.push(Entry::Key(k.clone())),
            }
        }
        out
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof!["[ab/é~ +%\u{1F600}\u{7F}\u{FFFF}]{1,8}", "\\PC{1,12}",]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn keys_round_trip_through_every_encoding(key in "\\PC{1,40}|[\\x00-\\x7F]{1,40}") {
            let encoded = uri_encode(key.as_bytes(), false);
            prop_assert_eq!(percent_decode(&encoded), key.as_bytes().to_vec());
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_graphic()));
            // The canonical URI of an encoded path is that path: signing is stable.
            let path = format!("/bucket/{encoded}");
            prop_assert_eq!(crate::sigv4::canonical_uri(&path), path.clone());
            prop_assert_eq!(percent_decode(&listing_encode(&key)), key.as_bytes().to_vec());
            prop_assert_eq!(notification_decode(&notification_encode(&key)), Some(key.clone()));
        }

        #[test]
        fn listings_are_in_byte_order_and_paginate_like_s3(
            keys in proptest::collection::btree_set(key_strategy(), 1..25),
            prefix in prop_oneof![Just(String::new()), Just("a".to_string()), Just("b/".to_string())],
            delimiter in prop_oneof![Just(None), Just(Some("/".to_string())), Just(Some("é".to_string()))],
            page in 1usize..6,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = ObjectStore::open(dir.path(), crate::Config::default()).unwrap();
            store.create_bucket("bucket", "us-east-1").unwrap();
            for k in &keys {
                put_empty(&store, "bucket", k);
            }
            let expected = model(&keys, &prefix, delimiter.as_deref());
            // One page with room for everything.
            let all = store
                .list_objects("bucket", &prefix, delimiter.as_deref(), 1000, ListAfter::Start)
                .unwrap();
            let got: Vec<Entry> = all
                .entries
                .iter()
                .map(|e| match e {
                    ListEntry::Object(o) => Entry::Key(o.key.clone()),
                    ListEntry::Prefix(p) => Entry::Prefix(p.clone()),
                })
                .collect();
            prop_assert_eq!(&got, &expected);
            prop_assert!(!all.truncated);
            // The same in pages, each resuming after the last entry of the one before.
            let mut paged = Vec::new();
            let mut after = ListAfter::Start;
            loop {
                let p = store
                    .list_objects("bucket", &prefix, delimiter.as_deref(), page, after)
                    .unwrap();
                prop_assert!(p.entries.len() <= page);
                after = match p.entries.last() {
                    Some(ListEntry::Object(o)) => ListAfter::Key(o.key.clone()),
                    Some(ListEntry::Prefix(x)) => ListAfter::Prefix(x.clone()),
                    None => ListAfter::Start,
                };
                for e in &p.entries {
                    paged.push(match e {
                        ListEntry::Object(o) => Entry::Key(o.key.clone()),
                        ListEntry::Prefix(x) => Entry::Prefix(x.clone()),
                    });
                }
                if !p.truncated {
                    break;
                }
                prop_assert!(paged.len() < 1000, "pagination does not end");
            }
            prop_assert_eq!(paged, expected);
        }
    }

    #[test]
    fn cors_configurations_survive_a_restart_and_go_with_their_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let doc = b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>\
            <AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
        let config = CorsConfig::from_xml(&crate::xml::parse(doc).unwrap()).unwrap();
        {
            let store = ObjectStore::open(dir.path(), crate::Config::default()).unwrap();
            store.create_bucket("web", "us-east-1").unwrap();
            assert_eq!(store.bucket_cors("web").unwrap(), None);
            store.put_bucket_cors("web", &config).unwrap();
            assert_eq!(
                store.put_bucket_cors("nope", &config).unwrap_err().code,
                "NoSuchBucket"
            );
        }
        let store = ObjectStore::open(dir.path(), crate::Config::default()).unwrap();
        assert_eq!(store.bucket_cors("web").unwrap(), Some(config.clone()));
        store.delete_bucket("web").unwrap();
        store.create_bucket("web", "us-east-1").unwrap();
        assert_eq!(store.bucket_cors("web").unwrap(), None);
    }

    #[test]
    fn etag_lists_and_normalisation() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("W/\"abc\"", "abc"));
        assert!(etag_matches("\"x\", \"abc\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
        assert_eq!(normalize_etag(" \"abc-2\" "), "abc-2");
    }
}
