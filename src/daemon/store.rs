//! The embedded store: entries persisted write-behind in one redb file.
//!
//! # Shape
//! - **Write-behind**: [`Store::put`] / [`Store::delete_prefix`] only
//!   `try_send` an [`Op`] into a bounded channel; they never block, never
//!   wait for the disk, and are called after the core has returned (no cache
//!   lock is held by anyone then). When the queue is full the write is
//!   dropped and counted: the cache, not the store, is the source of truth.
//! - **One writer thread** owns the database. It takes the first op, drains
//!   whatever else is queued (up to [`BATCH`]), applies them in one write
//!   transaction and commits once: redb syncs per commit, so batching is what
//!   keeps the disk cost flat under load.
//! - **Crash safety**: redb commits are atomic; `kill -9` loses at most the
//!   ops still queued or in the uncommitted batch, and never corrupts the
//!   file (`tests/faults.rs` kills a writing daemon several times over).
//! - **Degraded, never fatal**: the cache, not the store, is the source of
//!   truth, so a store that cannot be opened (read-only or missing data
//!   directory, disk full) or a commit that fails (`ENOSPC`, `EIO`) never
//!   stops the daemon: it serves from memory, the store is *degraded*
//!   ([`StoreStatsSnapshot::degraded`], the `ghcache_store_degraded` gauge,
//!   [`Store::last_error`]) and one error is logged on the way in. A failed
//!   commit loses its batch (counted in `errors`) and closes the database
//!   (redb refuses every later operation after an I/O error until it is
//!   reopened). While degraded, the writer keeps draining the queue and,
//!   when ops arrive, reopens the file with backoff (1 s doubling to
//!   [`RETRY_MAX`]); the first batch committed after that clears the state
//!   (logged once). Entries on disk that were not loaded at start (the
//!   store could not be opened then) come back at the next start.
//! - **Bounded**: after a commit that leaves more than [`Bounds`] allow
//!   (records, or bytes of keys and records), the oldest (by fetch time) are
//!   removed down to 90 % of the bounds. Expired records are dropped at load.
//! - **Loading**: [`Store::open`] reads every record; one that does not
//!   decode (bad magic, checksum, length, key) is skipped, counted, logged
//!   and deleted, never fatal. Entries come back with
//!   [`Origin::Disk`](crate::core::Origin::Disk).
//!
//! # Record format (version 1, little-endian)
//! ```text
//! "GHC1" | status u16 | fetched_unix_ms u64 | ttl_ms u64 | etag_len u16 | etag
//!        | body_len u32 | body | crc32 u32 (of every byte before it)
//! ```
//! [`decode_record`] is a pure function on arbitrary bytes, the fuzz target
//! for outside input.
//!
//! # The invalidation epoch
//! The fleet's invalidation epoch ([`Store::set_epoch`], see
//! `p2p::fleet`) is kept in a second table, `meta_v1`, as 8 little-endian
//! bytes. It goes through the same queue as the deletes, so it is committed
//! in the same batch as, or after, every delete queued before it: a store
//! never says it has applied an epoch whose deletes it lacks (a dropped
//! epoch write leaves it *lower*, which only makes the node clear more on
//! rejoin). The writer keeps the larger of the stored and the new value.
//!
//! A *delete* may be lost too (queue full, or its batch lost while the
//! store is degraded), and an epoch written after it must not vouch for a
//! store that still holds what the delete removed. So a lost delete raises
//! a flag ([`StoreStats::deletes_lost`]), and the next batch the writer
//! commits begins by removing every record: it drops more than was missed,
//! never less. The flag is raised before any later op is queued by the
//! same caller, and the writer reads it after receiving its batch, so the
//! batch that carries a later epoch always sees it.

use crate::sync::{lock, AtomicU64, Mutex, Ordering};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::core::{CacheKey, ETag};
use crate::sync::StdArc as Arc;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries_v1");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
const EPOCH_KEY: &str = "invalidation_epoch";
const MAGIC: &[u8; 4] = b"GHC1";
/// Most ops applied in one commit.
pub const BATCH: usize = 512;
/// Queue length between the daemon and the writer.
pub const QUEUE: usize = 4096;
/// First wait before reopening a store that failed; it doubles up to
/// [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between attempts to reopen a failed store.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// One entry as stored: the fetch time is wall-clock (Unix ms), since the
/// cache's monotonic clock starts over with each process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// HTTP status.
    pub status: u16,
    /// When fetched or last revalidated, Unix milliseconds.
    pub fetched_unix_ms: u64,
    /// Freshness lifetime.
    pub ttl: Duration,
    /// ETag, if any.
    pub etag: Option<ETag>,
    /// Body.
    pub body: Bytes,
}

/// Why a record did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt store record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a record (see the module docs).
pub fn encode_record(e: &StoredEntry) -> Vec<u8> {
    let tag = e.etag.as_ref().map_or("", |t| t.as_str()).as_bytes();
    let mut out = Vec::with_capacity(4 + 2 + 8 + 8 + 2 + tag.len() + 4 + e.body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&e.status.to_le_bytes());
    out.extend_from_slice(&e.fetched_unix_ms.to_le_bytes());
    out.extend_from_slice(&u64::try_from(e.ttl.as_millis()).unwrap_or(u64::MAX).to_le_bytes());
    out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
    out.extend_from_slice(tag);
    out.extend_from_slice(&u32::try_from(e.body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&e.body);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a record from arbitrary bytes: never panics; any damage is a
/// [`DecodeError`].
pub fn decode_record(bytes: &[u8]) -> Result<StoredEntry, DecodeError> {
    if bytes.len() < 4 + 2 + 8 + 8 + 2 + 4 + 4 {
        return Err(DecodeError("too short"));
    }
    let (payload, crc) = bytes.split_at(bytes.len() - 4);
    if crc32(payload).to_le_bytes() != crc {
        return Err(DecodeError("checksum mismatch"));
    }
    let mut r = Reader(payload);
    if r.take(4)? != MAGIC {
        return Err(DecodeError("bad magic"));
    }
    let status = u16::from_le_bytes(r.array()?);
    if !(100..=599).contains(&status) {
        return Err(DecodeError("bad status"));
    }
    let fetched_unix_ms = u64::from_le_bytes(r.array()?);
    let ttl = Duration::from_millis(u64::from_le_bytes(r.array()?));
    let tag_len = u16::from_le_bytes(r.array()?) as usize;
    let tag = r.take(tag_len)?;
    let etag = if tag.is_empty() {
        None
    } else {
        let text = std::str::from_utf8(tag).map_err(|_| DecodeError("etag not UTF-8"))?;
        Some(ETag::new(text).ok_or(DecodeError("bad etag"))?)
    };
    let body_len = u32::from_le_bytes(r.array()?) as usize;
    let body = Bytes::copy_from_slice(r.take(body_len)?);
    if !r.0.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(StoredEntry {
        status,
        fetched_unix_ms,
        ttl,
        etag,
        body,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Op {
    /// Store or replace a record.
    Put(CacheKey, StoredEntry),
    /// Remove every record whose key starts with this (empty: all).
    DeletePrefix(String),
    /// Remove every record whose key names this repository (`o/r`).
    DeleteRepository(String),
    /// Remove every record whose key reads a path these cover
    /// ([`key_path`](super::key_path)).
    DeletePaths(Vec<super::key_path::PathScope>),
    /// Remove one key.
    Delete(CacheKey),
    /// Record the invalidation epoch (the larger of this and the stored).
    SetEpoch(u64),
    /// Commit what came before, then answer.
    Flush(oneshot::Sender<()>),
    /// Commit what came before, close the database, then answer; later
    /// ops are dropped.
    Close(oneshot::Sender<()>),
}

impl Op {
    /// Removes records: losing it could leave something on disk that an
    /// invalidation dropped (module docs).
    fn is_delete(&self) -> bool {
        matches!(
            self,
            Op::Delete(_) | Op::DeletePrefix(_) | Op::DeleteRepository(_) | Op::DeletePaths(_)
        )
    }
}

/// Store counters.
#[derive(Debug, Default)]
pub struct StoreStats {
    written: AtomicU64,
    dropped: AtomicU64,
    corrupt: AtomicU64,
    loaded: AtomicU64,
    errors: AtomicU64,
    /// 1 while degraded (see the module docs).
    degraded: AtomicU64,
    /// 1 when a delete was lost since the last committed batch: the next
    /// commit starts by removing every record (module docs).
    deletes_lost: AtomicU64,
    /// Why, while degraded. A leaf lock: held only to copy a string in or
    /// out, never across I/O.
    last_error: Mutex<Option<String>>,
}

impl StoreStats {
    /// Enters (or stays in) the degraded state; true when newly entered.
    fn degrade(&self, why: String) -> bool {
        *lock(&self.last_error) = Some(why);
        self.degraded.swap(1, Ordering::SeqCst) == 0
    }

    /// Leaves the degraded state; true when it was degraded.
    fn recover(&self) -> bool {
        let was = self.degraded.swap(0, Ordering::SeqCst) == 1;
        *lock(&self.last_error) = None;
        was
    }
}

/// A copy of the store counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStatsSnapshot {
    /// Records written.
    pub written: u64,
    /// Writes dropped (queue full or writer gone).
    pub dropped: u64,
    /// Corrupt records skipped at load.
    pub corrupt: u64,
    /// Entries loaded at start.
    pub loaded: u64,
    /// Batches not committed (a failed commit, or the store unavailable).
    pub errors: u64,
    /// Serving from memory only: the store could not be opened, or its last
    /// commit failed (module docs).
    pub degraded: bool,
}

/// How much the store may hold: records, and bytes of keys plus records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Most records.
    pub max_entries: usize,
    /// Most bytes (keys and encoded records; the file itself adds redb's
    /// page overhead).
    pub max_bytes: u64,
}

/// The handle the daemon writes through (see the module docs).
#[derive(Debug)]
pub struct Store {
    tx: mpsc::Sender<Op>,
    stats: Arc<StoreStats>,
    /// The invalidation epoch read when the store was opened (0: none).
    epoch_at_open: u64,
}

/// Why the store could not be opened.
#[derive(Debug)]
pub struct OpenError(pub String);

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpenError {}

impl Store {
    /// Opens (or creates) the store at `path`, reads every good record,
    /// and starts the writer thread. Blocking: call from a blocking context
    /// or at start-up.
    pub fn open(
        path: &Path,
        bounds: Bounds,
        keep: &dyn Fn(&StoredEntry) -> bool,
    ) -> Result<(Store, Vec<(CacheKey, StoredEntry)>), OpenError> {
        super::private_fs::create_file(path)
            .map_err(|e| OpenError(format!("cannot create {}: {e}", path.display())))?;
        let db = Database::create(path).map_err(|e| OpenError(format!("cannot open store {}: {e}", path.display())))?;
        let stats = Arc::new(StoreStats::default());
        let (loaded, bytes) = load(&db, &stats, bounds, keep)
            .map_err(|e| OpenError(format!("cannot read store {}: {e}", path.display())))?;
        let epoch_at_open =
            load_epoch(&db).map_err(|e| OpenError(format!("cannot read store {}: {e}", path.display())))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer_stats = stats.clone();
        let w = Writer {
            db: Some(db),
            path: path.to_path_buf(),
            bounds,
            bytes,
            retry_at: Instant::now(),
            retry_wait: RETRY_FIRST,
        };
        std::thread::Builder::new()
            .name("ghcache-store".into())
            .spawn(move || writer(w, rx, writer_stats))
            .map_err(|e| OpenError(format!("cannot start the store writer: {e}")))?;
        Ok((
            Store {
                tx,
                stats,
                epoch_at_open,
            },
            loaded,
        ))
    }

    /// A store that could not be opened (`error`): degraded from the start.
    /// Writes are queued as usual; the writer tries to open `path` again
    /// with backoff and, once it can, writes to it (module docs).
    pub fn unavailable(path: &Path, bounds: Bounds, error: &OpenError) -> Store {
        let stats = Arc::new(StoreStats::default());
        stats.degrade(error.to_string());
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer_stats = stats.clone();
        let w = Writer {
            db: None,
            path: path.to_path_buf(),
            bounds,
            bytes: 0,
            retry_at: Instant::now() + RETRY_FIRST,
            retry_wait: RETRY_FIRST,
        };
        // Should the thread not start, the receiver is gone and every write
        // is dropped and counted: still memory only, as promised.
        let _ = std::thread::Builder::new()
            .name("ghcache-store".into())
            .spawn(move || writer(w, rx, writer_stats));
        Store {
            tx,
            stats,
            epoch_at_open: 0,
        }
    }

    /// Why the store is degraded, while it is.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.stats.last_error).clone()
    }

    /// Queues a write; never blocks (dropped and counted when full).
    pub fn put(&self, key: CacheKey, entry: StoredEntry) {
        self.send(Op::Put(key, entry));
    }

    /// Queues removal of one key.
    pub fn delete(&self, key: CacheKey) {
        self.send(Op::Delete(key));
    }

    /// Queues removal of every key with `prefix` (empty: everything).
    pub fn delete_prefix(&self, prefix: &str) {
        self.send(Op::DeletePrefix(prefix.to_string()));
    }

    /// Queues removal of every key naming repository `repo` (`o/r`).
    pub fn delete_repository(&self, repo: &str) {
        self.send(Op::DeleteRepository(repo.to_string()));
    }

    /// Queues removal of every key reading a path `scopes` cover.
    pub fn delete_paths(&self, scopes: &[super::key_path::PathScope]) {
        self.send(Op::DeletePaths(scopes.to_vec()));
    }

    /// Queues the invalidation epoch (after every delete queued before).
    pub fn set_epoch(&self, epoch: u64) {
        self.send(Op::SetEpoch(epoch));
    }

    /// The invalidation epoch the store held when it was opened (0 when it
    /// held none or could not be opened).
    pub fn epoch_at_open(&self) -> u64 {
        self.epoch_at_open
    }

    fn send(&self, op: Op) {
        if let Err(refused) = self.tx.try_send(op) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let (mpsc::error::TrySendError::Full(op) | mpsc::error::TrySendError::Closed(op)) = refused;
            if op.is_delete() {
                self.stats.deletes_lost.store(1, Ordering::SeqCst);
            }
        }
    }

    /// Waits until everything queued before is committed, or lost while
    /// the store is degraded (bounded by the caller's timeout).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Op::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Commits everything queued before, closes the file and stops the
    /// writer (bounded by the caller's timeout). Later writes are dropped.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Op::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// The counters.
    pub fn stats(&self) -> StoreStatsSnapshot {
        let s = &self.stats;
        StoreStatsSnapshot {
            written: s.written.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
            loaded: s.loaded.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            degraded: s.degraded.load(Ordering::SeqCst) == 1,
        }
    }
}

type StoreResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The stored invalidation epoch (0 when none, or not 8 bytes).
fn load_epoch(db: &Database) -> StoreResult<u64> {
    let read = db.begin_read()?;
    let table = match read.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(table
        .get(EPOCH_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map_or(0, u64::from_le_bytes))
}

/// Reads every record: corrupt ones and those `keep` rejects (expired) are
/// deleted, then the oldest beyond the bounds. Returns the rest, newest
/// first, and their total size in bytes.
fn load(
    db: &Database,
    stats: &StoreStats,
    bounds: Bounds,
    keep: &dyn Fn(&StoredEntry) -> bool,
) -> StoreResult<(Vec<(CacheKey, StoredEntry)>, u64)> {
    let mut good: Vec<(CacheKey, StoredEntry, u64)> = Vec::new();
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    {
        let read = db.begin_read()?;
        let table = match read.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e.into()),
        };
        for item in table.iter()? {
            let (k, v) = item?;
            let key = std::str::from_utf8(k.value())
                .ok()
                .and_then(|s| CacheKey::parse(s).ok());
            let record = decode_record(v.value());
            match (key, record) {
                (Some(key), Ok(entry)) => {
                    if keep(&entry) {
                        let size = (k.value().len() + v.value().len()) as u64;
                        good.push((key, entry, size));
                    } else {
                        doomed.push(k.value().to_vec());
                    }
                }
                (key, record) => {
                    let why = match record {
                        Err(e) => e.to_string(),
                        Ok(_) if key.is_none() => "key is not a canonical cache key".to_string(),
                        Ok(_) => unreachable!("a good key and record are kept"),
                    };
                    tracing::warn!(key = %String::from_utf8_lossy(k.value()), %why, "skipping corrupt store record");
                    stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    doomed.push(k.value().to_vec());
                }
            }
        }
    }
    // Newest first; keep what fits the bounds.
    good.sort_by_key(|g| std::cmp::Reverse(g.1.fetched_unix_ms));
    let mut bytes = 0;
    let mut fit = 0;
    for (_, _, size) in &good {
        if fit >= bounds.max_entries || bytes + size > bounds.max_bytes {
            break;
        }
        bytes += size;
        fit += 1;
    }
    doomed.extend(good.drain(fit..).map(|(k, _, _)| k.as_str().as_bytes().to_vec()));
    if !doomed.is_empty() {
        let write = db.begin_write()?;
        {
            let mut table = write.open_table(TABLE)?;
            for k in &doomed {
                table.remove(k.as_slice())?;
            }
        }
        write.commit()?;
    }
    stats.loaded.store(good.len() as u64, Ordering::Relaxed);
    Ok((good.into_iter().map(|(k, e, _)| (k, e)).collect(), bytes))
}

/// What the writer thread owns.
struct Writer {
    /// None while degraded: not opened yet, or closed after a failure.
    db: Option<Database>,
    path: PathBuf,
    bounds: Bounds,
    /// Bytes of keys and records stored (exact: kept up to date from the
    /// old values that insert and remove hand back).
    bytes: u64,
    /// While `db` is None: no attempt to open it before this.
    retry_at: Instant,
    retry_wait: Duration,
}

impl Writer {
    /// Opens the database again when it is closed and the backoff has
    /// passed; true when it is open.
    fn reopen(&mut self, stats: &StoreStats) -> bool {
        if self.db.is_some() {
            return true;
        }
        if Instant::now() < self.retry_at {
            return false;
        }
        match open_db(&self.path) {
            Ok((db, bytes)) => {
                self.db = Some(db);
                self.bytes = bytes;
                self.retry_wait = RETRY_FIRST;
                true
            }
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "store still unavailable");
                stats.degrade(e);
                self.retry_at = Instant::now() + self.retry_wait;
                self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
                false
            }
        }
    }
}

/// Opens (or creates) the database at `path` for the writer, and counts the
/// bytes it holds.
fn open_db(path: &Path) -> Result<(Database, u64), String> {
    super::private_fs::create_file(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let db = Database::create(path).map_err(|e| format!("cannot open store {}: {e}", path.display()))?;
    let bytes = (|| -> StoreResult<u64> {
        let read = db.begin_read()?;
        let table = match read.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = 0;
        for item in table.iter()? {
            let (k, v) = item?;
            bytes += (k.value().len() + v.value().len()) as u64;
        }
        Ok(bytes)
    })()
    .map_err(|e| format!("cannot read store {}: {e}", path.display()))?;
    Ok((db, bytes))
}

fn writer(mut w: Writer, mut rx: mpsc::Receiver<Op>, stats: Arc<StoreStats>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        let close = batch.iter().position(|op| matches!(op, Op::Close(_)));
        let mut closing = None;
        if let Some(i) = close {
            // Ops queued after Close are dropped with the receiver.
            batch.truncate(i + 1);
            if let Some(Op::Close(ack)) = batch.pop() {
                closing = Some(ack);
            }
        }
        if stats.deletes_lost.swap(0, Ordering::SeqCst) == 1 {
            // A delete was lost: start from an empty table (module docs).
            batch.insert(0, Op::DeletePrefix(String::new()));
        }
        let has_deletes = batch.iter().any(Op::is_delete);
        let before = w.bytes;
        let lost = batch.iter().any(|op| !matches!(op, Op::Flush(_) | Op::Close(_)));
        // A batch of flushes alone is no reason to reopen a closed store.
        let result = if (lost || w.db.is_some()) && w.reopen(&stats) {
            w.apply(&mut batch, &mut acks).map_err(Some)
        } else {
            Err(None) // degraded: the batch is lost
        };
        match result {
            Ok(written) => {
                stats.written.fetch_add(written, Ordering::Relaxed);
                if stats.recover() {
                    tracing::info!(path = %w.path.display(), "store recovered: writing to disk again");
                }
            }
            Err(e) => {
                w.bytes = before;
                if lost || e.is_some() {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                if has_deletes {
                    stats.deletes_lost.store(1, Ordering::SeqCst);
                }
                // Flushes still get their answer.
                acks.extend(batch.drain(..).filter_map(|op| match op {
                    Op::Flush(ack) | Op::Close(ack) => Some(ack),
                    _ => None,
                }));
                if let Some(e) = e {
                    // redb refuses every later operation after an I/O
                    // error until the file is reopened: close it now.
                    w.db = None;
                    w.retry_at = Instant::now() + w.retry_wait;
                    w.retry_wait = (w.retry_wait * 2).min(RETRY_MAX);
                    let why = format!("store commit failed on {}: {e}", w.path.display());
                    if stats.degrade(why) {
                        tracing::error!(path = %w.path.display(), error = %e,
                            "store commit failed; batch lost; serving from memory only until the store recovers");
                    } else {
                        tracing::debug!(error = %e, "store commit failed again");
                    }
                }
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
        if let Some(ack) = closing {
            drop(w);
            rx.close();
            let _ = ack.send(());
            tracing::debug!("store closed");
            return;
        }
    }
    tracing::debug!("store writer stopped");
}

impl Writer {
    /// Applies a batch in one transaction; returns the records written.
    fn apply(&mut self, batch: &mut Vec<Op>, acks: &mut Vec<oneshot::Sender<()>>) -> StoreResult<u64> {
        let db = self.db.as_ref().ok_or("store closed")?;
        let write = db.begin_write()?;
        let mut written = 0;
        {
            let mut table = write.open_table(TABLE)?;
            let mut meta = write.open_table(META)?;
            for op in batch.drain(..) {
                match op {
                    Op::Put(key, entry) => {
                        let k = key.as_str().as_bytes();
                        let record = encode_record(&entry);
                        self.bytes += (k.len() + record.len()) as u64;
                        if let Some(old) = table.insert(k, record.as_slice())? {
                            self.bytes -= (k.len() + old.value().len()) as u64;
                        }
                        written += 1;
                    }
                    Op::Delete(key) => {
                        let k = key.as_str().as_bytes();
                        if let Some(old) = table.remove(k)? {
                            self.bytes -= (k.len() + old.value().len()) as u64;
                        }
                    }
                    Op::DeletePrefix(_) | Op::DeleteRepository(_) | Op::DeletePaths(_) => {
                        let doomed_key = |k: &[u8]| match &op {
                            Op::DeletePrefix(prefix) => k.starts_with(prefix.as_bytes()),
                            Op::DeleteRepository(repo) => std::str::from_utf8(k)
                                .is_ok_and(|text| crate::core::key_text_names_repository(text, repo)),
                            Op::DeletePaths(scopes) => std::str::from_utf8(k)
                                .is_ok_and(|text| super::key_path::any_covers_key_text(scopes, text)),
                            _ => false,
                        };
                        let mut freed = 0;
                        table.retain(|k, v| {
                            let doomed = doomed_key(k);
                            if doomed {
                                freed += (k.len() + v.len()) as u64;
                            }
                            !doomed
                        })?;
                        self.bytes -= freed;
                    }
                    Op::SetEpoch(epoch) => {
                        let stored = meta
                            .get(EPOCH_KEY)?
                            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                            .map_or(0, u64::from_le_bytes);
                        if epoch > stored {
                            meta.insert(EPOCH_KEY, epoch.to_le_bytes().as_slice())?;
                        }
                    }
                    Op::Flush(ack) | Op::Close(ack) => acks.push(ack),
                }
            }
            let len = table.len()? as usize;
            if len > self.bounds.max_entries || self.bytes > self.bounds.max_bytes {
                // Drop the oldest down to 90 % of both bounds.
                let mut ages: Vec<(u64, Vec<u8>, u64)> = Vec::with_capacity(len);
                for item in table.iter()? {
                    let (k, v) = item?;
                    let fetched = decode_record(v.value()).map_or(0, |e| e.fetched_unix_ms);
                    ages.push((fetched, k.value().to_vec(), (k.value().len() + v.value().len()) as u64));
                }
                ages.sort();
                let (entry_target, byte_target) = (self.bounds.max_entries * 9 / 10, self.bounds.max_bytes / 10 * 9);
                let mut count = len;
                for (_, k, size) in &ages {
                    if count <= entry_target && self.bytes <= byte_target {
                        break;
                    }
                    table.remove(k.as_slice())?;
                    count -= 1;
                    self.bytes -= size;
                }
            }
        }
        write.commit()?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Operation;

    fn sample() -> StoredEntry {
        StoredEntry {
            status: 200,
            fetched_unix_ms: 1_700_000_000_000,
            ttl: Duration::from_secs(60),
            etag: ETag::new("W/\"abc\""),
            body: Bytes::from_static(b"{\"a\":1}"),
        }
    }

    #[test]
    fn record_round_trip_and_damage() {
        let e = sample();
        let bytes = encode_record(&e);
        assert_eq!(decode_record(&bytes), Ok(e));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(decode_record(&damaged).is_err(), "flip at {i}");
        }
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_record(&[]).is_err());
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// An empty directory for test `name`, the store path in it, and a
    /// runtime to close stores on.
    fn scratch(name: &str) -> (std::path::PathBuf, std::path::PathBuf, tokio::runtime::Runtime) {
        let dir = std::env::temp_dir().join(format!("ghcache-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("cache.redb");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (dir, path, rt)
    }

    fn bounds(max_entries: usize) -> Bounds {
        Bounds {
            max_entries,
            max_bytes: u64::MAX,
        }
    }

    #[test]
    fn byte_bound_and_expiry() {
        let (dir, path, rt) = scratch("bytes");
        let key = |i: usize| CacheKey::new(Operation::Repo, [("repo", Some(format!("o/r{i}")))]);
        let mut big = sample();
        big.body = Bytes::from(vec![b'x'; 1000]);
        let one = (key(0).as_str().len() + encode_record(&big).len()) as u64;
        let by_bytes = Bounds {
            max_entries: 100,
            max_bytes: one * 10,
        };
        {
            let (store, _) = Store::open(&path, by_bytes, &|_| true).unwrap();
            for i in 0..20 {
                let mut e = big.clone();
                e.fetched_unix_ms += i as u64;
                store.put(key(i), e);
            }
            rt.block_on(store.close());
        }
        // Within the byte bound: at most 10 records of this size.
        let (store, loaded) = Store::open(&path, by_bytes, &|_| true).unwrap();
        assert!(loaded.len() <= 10 && loaded.len() >= 8, "{}", loaded.len());
        // The newest were kept.
        assert!(loaded.iter().any(|(k, _)| *k == key(19)));
        rt.block_on(store.close());
        // Expired records are dropped at load (and deleted).
        let (store, loaded) = Store::open(&path, bounds(100), &|e| e.fetched_unix_ms % 2 == 0).unwrap();
        assert!(loaded.iter().all(|(_, e)| e.fetched_unix_ms % 2 == 0));
        rt.block_on(store.close());
        let (store, loaded2) = Store::open(&path, bounds(100), &|_| true).unwrap();
        assert_eq!(loaded.len(), loaded2.len());
        rt.block_on(store.close());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn epoch_survives_a_reopen_and_never_goes_back() {
        let (dir, path, rt) = scratch("epoch");
        let key = CacheKey::new(Operation::Repo, [("repo", Some("o/r"))]);
        {
            let (store, _) = Store::open(&path, bounds(100), &|_| true).unwrap();
            assert_eq!(store.epoch_at_open(), 0);
            store.put(key.clone(), sample());
            store.delete_prefix("");
            store.set_epoch(7);
            store.set_epoch(5);
            rt.block_on(store.close());
        }
        let (store, loaded) = Store::open(&path, bounds(100), &|_| true).unwrap();
        assert_eq!(store.epoch_at_open(), 7, "the larger epoch is kept");
        assert!(loaded.is_empty(), "the delete before the epoch was committed");
        rt.block_on(store.close());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unavailable_store_recovers_once_its_path_is_usable() {
        let dir = std::env::temp_dir().join(format!("ghcache-store-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, b"a file, not a directory").unwrap();
        let path = blocker.join("data").join("cache.redb");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let key = |i: usize| CacheKey::new(Operation::Repo, [("repo", Some(format!("o/r{i}")))]);
        let err = Store::open(&path, bounds(10), &|_| true).unwrap_err();
        assert!(err.to_string().contains("Not a directory"), "{err}");
        let store = Store::unavailable(&path, bounds(10), &err);
        assert!(store.stats().degraded);
        assert_eq!(store.last_error(), Some(err.to_string()));
        // Within the backoff: lost, counted, still degraded.
        store.put(key(0), sample());
        rt.block_on(store.flush());
        let s = store.stats();
        assert!(s.degraded && s.errors == 1 && s.written == 0, "{s:?}");
        // The path becomes usable: the next write opens it and recovers.
        std::fs::remove_file(&blocker).unwrap();
        std::thread::sleep(RETRY_FIRST + Duration::from_millis(100));
        store.put(key(1), sample());
        rt.block_on(store.flush());
        let s = store.stats();
        assert!(!s.degraded && s.written == 1, "{s:?}");
        assert_eq!(store.last_error(), None);
        rt.block_on(store.close());
        let (store, loaded) = Store::open(&path, bounds(10), &|_| true).unwrap();
        assert_eq!(loaded.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![key(1)]);
        rt.block_on(store.close());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lost_delete_empties_the_store_before_a_later_epoch_is_kept() {
        let (dir, _, rt) = scratch("lost-delete");
        let path = dir.join("data").join("cache.redb");
        let key = |i: usize| CacheKey::new(Operation::Repo, [("repo", Some(format!("o/r{i}")))]);
        {
            let (store, _) = Store::open(&path, bounds(10), &|_| true).unwrap();
            store.put(key(0), sample());
            store.put(key(1), sample());
            rt.block_on(store.close());
        }
        // The store's directory goes away (a file stands in its place), so
        // the delete's batch is lost while degraded.
        let data = path.parent().unwrap().to_path_buf();
        let away = dir.join("away");
        std::fs::rename(&data, &away).unwrap();
        std::fs::write(&data, b"a file, not a directory").unwrap();
        let err = Store::open(&path, bounds(10), &|_| true).unwrap_err();
        let store = Store::unavailable(&path, bounds(10), &err);
        store.delete(key(0));
        rt.block_on(store.flush());
        assert_eq!(store.stats().errors, 1, "{:?}", store.stats());
        // The directory comes back; the next batch carries a later epoch.
        std::fs::remove_file(&data).unwrap();
        std::fs::rename(&away, &data).unwrap();
        std::thread::sleep(RETRY_FIRST + Duration::from_millis(100));
        store.put(key(2), sample());
        store.set_epoch(9);
        rt.block_on(store.flush());
        assert!(!store.stats().degraded, "{:?}", store.stats());
        rt.block_on(store.close());
        let (store, loaded) = Store::open(&path, bounds(10), &|_| true).unwrap();
        assert_eq!(store.epoch_at_open(), 9);
        let keys: Vec<_> = loaded.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![key(2)],
            "the deleted key must not come back under the new epoch"
        );
        rt.block_on(store.close());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_persists_skips_corrupt_and_bounds() {
        let (dir, path, rt) = scratch("test");
        let key = |i: usize| CacheKey::new(Operation::Repo, [("repo", Some(format!("o/r{i}")))]);
        {
            let (store, loaded) = Store::open(&path, bounds(10), &|_| true).unwrap();
            assert!(loaded.is_empty());
            for i in 0..15 {
                let mut e = sample();
                e.fetched_unix_ms += i as u64;
                store.put(key(i), e);
            }
            rt.block_on(store.flush());
            assert_eq!(store.stats().written, 15);
            rt.block_on(store.close());
            store.put(key(99), sample()); // after close: dropped, counted
            assert_eq!(store.stats().dropped, 1);
        }
        {
            // Corrupt one record behind the store's back.
            let db = Database::create(&path).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut t = w.open_table(TABLE).unwrap();
                t.insert(key(14).as_str().as_bytes(), b"garbage".as_slice()).unwrap();
                t.insert(b"not a key".as_slice(), encode_record(&sample()).as_slice())
                    .unwrap();
            }
            w.commit().unwrap();
        }
        let (store, loaded) = Store::open(&path, bounds(10), &|_| true).unwrap();
        assert_eq!(store.stats().corrupt, 2);
        // Pruned to 9 after the 15 puts, one of which is now corrupt.
        assert_eq!(
            loaded.len(),
            8,
            "{:?}",
            loaded.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()
        );
        assert!(loaded.iter().all(|(_, e)| e.etag.is_some()));
        rt.block_on(store.close());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
