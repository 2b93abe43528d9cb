//! Streaming snapshot install. A snapshot received from a leader is loaded into a fresh redb
//! file (`sm-install-N.redb`, beside `sm.redb`) by a thread that follows the received file as
//! its chunks are written, so receiving and loading overlap: an install costs about the longer
//! of the two instead of their sum (10 M files: 35 s transfer + 82 s load, one after the other,
//! before). Owns [`SnapFile`], the type openraft reads and writes snapshots through.
//!
//! Must not touch the live `sm.redb`: the state-machine store swaps the loaded file in when
//! openraft installs the snapshot, and an abandoned transfer (its `SnapFile` dropped, or a
//! snapshot that fails to load) deletes the file. If anything here fails, the store loads the
//! received file the old way, so streaming is an optimisation and never the only path.

use std::fs::File;
use std::io::{self, BufReader, Read, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::Database;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::redb_kv::RedbWrite;
use super::state_machine::{begin_durable, write_raft_meta};
use super::{open_db, snapshot, StoreError, SM_FORMAT_VERSION};
use crate::sm;
use crate::types::SnapshotMeta;

/// A snapshot as openraft sees it: a file it reads to send, or writes chunks into as they
/// arrive. A received one also feeds a [`Loader`].
pub struct SnapFile {
    file: tokio::fs::File,
    /// Where the next write lands.
    pos: u64,
    /// A seek was started; `poll_complete` reports where it ended.
    seeking: bool,
    /// A written range tokio may still be writing in the background: the loader may read it
    /// only once a flush has completed.
    unsettled: Option<(u64, u64)>,
    loader: Option<Loader>,
}

impl SnapFile {
    /// A snapshot file opened to be read (sent to a peer, or read back in tests).
    pub fn serve(file: tokio::fs::File) -> SnapFile {
        SnapFile {
            file,
            pos: 0,
            seeking: false,
            unsettled: None,
            loader: None,
        }
    }

    /// A file being received, whose bytes `loader` (if any) loads as they are written.
    pub(crate) fn receiving(file: tokio::fs::File, loader: Option<Loader>) -> SnapFile {
        SnapFile {
            loader,
            ..SnapFile::serve(file)
        }
    }

    /// The received file and its loader, for the install.
    pub(crate) async fn into_parts(self) -> (File, Option<Loader>) {
        (self.file.into_std().await, self.loader)
    }

    /// Waits for tokio's background write to land, then lets the loader read it.
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((start, end)) = self.unsettled {
            ready!(Pin::new(&mut self.file).poll_flush(cx))?;
            self.unsettled = None;
            if let Some(l) = &self.loader {
                l.shared.written(start, end);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SnapFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.poll_settle(cx))?;
        let n = ready!(Pin::new(&mut me.file).poll_write(cx, buf))?;
        let start = me.pos;
        me.pos += n as u64;
        if me.loader.is_some() {
            me.unsettled = Some((start, me.pos));
            // Usually done by now; if not, the next write, flush or shutdown settles it.
            if let Poll::Ready(r) = me.poll_settle(cx) {
                r?;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_settle(cx))?;
        Pin::new(&mut me.file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_settle(cx))?;
        Pin::new(&mut me.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let me = self.get_mut();
        if me.unsettled.is_some() {
            return Err(io::Error::other(
                "a write is pending, call poll_complete before start_seek",
            ));
        }
        Pin::new(&mut me.file).start_seek(position)?;
        me.seeking = true;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let me = self.get_mut();
        ready!(me.poll_settle(cx))?;
        let at = ready!(Pin::new(&mut me.file).poll_complete(cx))?;
        if std::mem::take(&mut me.seeking) {
            me.pos = at;
        }
        Poll::Ready(Ok(at))
    }
}

/// How far the received file is written, shared by the writer and the loading thread.
#[derive(Default)]
struct Progress {
    /// Bytes from offset 0 known to be in the file.
    written: u64,
    /// No more bytes will come (the install has started).
    end: bool,
    /// The transfer was abandoned: stop and delete the file.
    abort: bool,
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A panic elsewhere cannot leave `Progress` half-updated (plain stores), so a poisoned
        // lock is still usable.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes `start..end` are in the file. Ranges arrive in order; a resent chunk (a range
    /// already covered) changes nothing, and one past a gap is not readable until the gap is
    /// filled, which openraft never leaves (it then falls back to a whole-file load).
    fn written(&self, start: u64, end: u64) {
        let mut p = self.lock();
        if start <= p.written && end > p.written {
            p.written = end;
            self.changed.notify_all();
        }
    }

    fn set(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// Reads the received file as it grows, blocking until bytes are written; ends at the
/// install (or fails if the transfer is abandoned).
struct Tail {
    src: File,
    pos: u64,
    shared: Arc<Shared>,
    /// Time spent waiting for the network rather than loading.
    waited: Duration,
}

impl Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = {
            let started = Instant::now();
            let mut p = self.shared.lock();
            let avail = loop {
                if p.abort {
                    return Err(io::Error::other("snapshot transfer abandoned"));
                }
                if p.written > self.pos {
                    break p.written - self.pos;
                }
                if p.end {
                    return Ok(0);
                }
                p = self
                    .shared
                    .changed
                    .wait(p)
                    .unwrap_or_else(|e| e.into_inner());
            };
            self.waited += started.elapsed();
            avail.min(buf.len() as u64) as usize
        };
        let n = self.src.read_at(&mut buf[..avail], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// What a loading thread built: a complete, durable state-machine file for the snapshot.
pub(crate) struct Loaded {
    pub db: Database,
    pub path: PathBuf,
    pub rows: u64,
    /// The snapshot's last log index and the state machine's revision at it.
    pub log_index: u64,
    pub revision: u64,
    /// Of the load's time, how much went waiting for bytes to arrive.
    pub waited: Duration,
    /// From the install's start (all bytes in) to the file being durable.
    pub tail: Duration,
}

/// A thread loading one received snapshot into a fresh redb file. Dropping it without
/// [`Loader::finish`] abandons the load and deletes the file.
pub(crate) struct Loader {
    shared: Arc<Shared>,
    meta: mpsc::Sender<(SnapshotMeta, Instant)>,
    thread: Option<JoinHandle<Result<Loaded, StoreError>>>,
}

impl Loader {
    /// Starts loading `received` (being written by a [`SnapFile`]) into a new redb file at
    /// `db_path` with a `cache_bytes` page cache.
    pub(crate) fn start(
        received: &Path,
        db_path: PathBuf,
        cache_bytes: usize,
    ) -> Result<Loader, StoreError> {
        let src = File::open(received)?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let tail = Tail {
            src,
            pos: 0,
            shared: shared.clone(),
            waited: Duration::ZERO,
        };
        let thread = std::thread::Builder::new()
            .name("metad-snap-load".into())
            .spawn(move || {
                let r = load(tail, &db_path, cache_bytes, rx);
                if r.is_err() {
                    let _ = std::fs::remove_file(&db_path);
                }
                r
            })?;
        Ok(Loader {
            shared,
            meta: tx,
            thread: Some(thread),
        })
    }

    /// No more bytes come: finishes the load with the snapshot's `meta` (last-applied,
    /// membership) and returns the durable file. Blocks until the thread is done.
    pub(crate) fn finish(mut self, meta: SnapshotMeta) -> Result<Loaded, StoreError> {
        let started = Instant::now();
        self.shared.set(|p| p.end = true);
        // If the thread already failed it no longer listens; its error is in the join.
        let _ = self.meta.send((meta, started));
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(StoreError::Corrupt(
                "snapshot loading thread panicked".into(),
            )),
            None => Err(StoreError::Corrupt(
                "snapshot loader already finished".into(),
            )),
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // The thread sees the flag (or the closed channel), stops and deletes its file.
            self.shared.set(|p| p.abort = true);
        }
    }
}

fn load(
    tail: Tail,
    db_path: &Path,
    cache_bytes: usize,
    meta: mpsc::Receiver<(SnapshotMeta, Instant)>,
) -> Result<Loaded, StoreError> {
    let db = open_db(db_path, cache_bytes, SM_FORMAT_VERSION)?;
    let w = begin_durable(&db)?;
    let mut input = BufReader::with_capacity(1 << 20, tail);
    let rows = snapshot::load(&mut input, &w)?;
    let waited = input.get_ref().waited;
    let (meta, install_started) = meta
        .recv()
        .map_err(|_| StoreError::Io(io::Error::other("snapshot transfer abandoned")))?;
    write_raft_meta(&w, &meta)?;
    let revision = sm::revision(&RedbWrite::new(&w))?;
    w.commit()?;
    Ok(Loaded {
        db,
        path: db_path.to_path_buf(),
        rows,
        log_index: meta.last_log_id.map(|l| l.index).unwrap_or(0),
        revision,
        waited,
        tail: install_started.elapsed(),
    })
}
