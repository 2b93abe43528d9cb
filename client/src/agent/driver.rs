//! The [`SiloDriver`] trait (how an agent touches the bytes of files on one silo), the
//! checksum format (`blake3:<64 hex>`, computed while streaming), location validation, and
//! [`TaskReader`], the source-side wrapper that counts bytes for progress and aborts a copy.

use std::future::Future;
use std::io;
use std::path::{Component, Path};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// A boxed future, so that [`SiloDriver`] stays object safe (`Arc<dyn SiloDriver>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stream of a file's bytes.
pub type ByteReader = Pin<Box<dyn AsyncRead + Send + 'static>>;

/// Prefix of every checksum this SDK computes.
pub const CHECKSUM_PREFIX: &str = "blake3:";

/// Size of the buffer bytes are streamed through (never a whole file in memory).
pub const CHUNK: usize = 1 << 20;

/// Bytes written under a temporary name, not yet visible at their location. Hand it back to
/// [`SiloDriver::publish`] (atomic placement) or [`SiloDriver::discard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// Where the bytes will be, relative to the silo root.
    pub location: String,
    /// Bytes written.
    pub bytes: u64,
    /// Checksum of the bytes written (`blake3:<hex>`).
    pub checksum: String,
    /// The driver's handle on the temporary copy (for the posix driver: the temp path).
    pub handle: String,
}

/// The bytes of files on one silo. Locations are relative to the silo's root, without a
/// leading `/`; drivers refuse `..`, absolute locations and NUL with `InvalidInput`.
///
/// Writes are two-phase so that the agent can check its lease between them: [`stage`]
/// writes the bytes durably under a temporary name (computing the checksum as they stream
/// by), [`publish`] makes them appear at their location atomically (readers see the old
/// bytes or the new ones, never a partial file), [`discard`] removes a staged copy.
///
/// [`stage`]: SiloDriver::stage
/// [`publish`]: SiloDriver::publish
/// [`discard`]: SiloDriver::discard
pub trait SiloDriver: Send + Sync + 'static {
    /// A short description for logs (e.g. `posix:/mnt/nas1`).
    fn describe(&self) -> String;

    /// The size of the file at `location`, or `None` if there is none.
    fn stat<'a>(&'a self, location: &'a str) -> BoxFuture<'a, io::Result<Option<u64>>>;

    /// Opens the file at `location` for reading.
    fn open<'a>(&'a self, location: &'a str) -> BoxFuture<'a, io::Result<ByteReader>>;

    /// Writes everything `source` yields under a temporary name next to `location`, durably
    /// (synced), and returns the handle with the byte count and checksum. On error nothing
    /// is left behind.
    fn stage<'a>(
        &'a self,
        location: &'a str,
        source: ByteReader,
    ) -> BoxFuture<'a, io::Result<Staged>>;

    /// Atomically places staged bytes at their location (replacing any file there) and
    /// makes the placement durable.
    fn publish(&self, staged: Staged) -> BoxFuture<'_, io::Result<()>>;

    /// Removes staged bytes that will not be published.
    fn discard(&self, staged: Staged) -> BoxFuture<'_, io::Result<()>>;

    /// Deletes the file at `location`. `Ok(false)` if there was none (not an error).
    fn delete<'a>(&'a self, location: &'a str) -> BoxFuture<'a, io::Result<bool>>;

    /// Size and checksum of the file at `location`, streaming it once.
    fn checksum<'a>(&'a self, location: &'a str) -> BoxFuture<'a, io::Result<(u64, String)>> {
        Box::pin(async move {
            let r = self.open(location).await?;
            checksum_reader(r).await
        })
    }

    /// Removes temporary files (of [`SiloDriver::stage`]) not modified for `max_age`: the
    /// leftovers of an agent killed mid-copy. Returns how many were removed. Default: none.
    fn sweep_temp(&self, max_age: std::time::Duration) -> BoxFuture<'_, io::Result<u64>> {
        let _ = max_age;
        Box::pin(async { Ok(0) })
    }

    /// Stage then publish: writes `source` at `location` atomically; returns the byte count
    /// and checksum.
    fn write<'a>(
        &'a self,
        location: &'a str,
        source: ByteReader,
    ) -> BoxFuture<'a, io::Result<(u64, String)>> {
        Box::pin(async move {
            let staged = self.stage(location, source).await?;
            let out = (staged.bytes, staged.checksum.clone());
            self.publish(staged).await?;
            Ok(out)
        })
    }
}

/// The checksum string of a finished hash.
pub fn checksum_string(hash: &blake3::Hash) -> String {
    format!("{CHECKSUM_PREFIX}{}", hash.to_hex())
}

/// The checksum of `bytes` (small buffers; files are hashed while streaming).
pub fn checksum_of(bytes: &[u8]) -> String {
    checksum_string(&blake3::hash(bytes))
}

/// Whether a checksum string is one this SDK can verify (`blake3:` + 64 hex digits).
pub fn is_verifiable(checksum: &str) -> bool {
    checksum
        .strip_prefix(CHECKSUM_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Streams `reader` to the end: byte count and checksum.
pub async fn checksum_reader(mut reader: ByteReader) -> io::Result<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, checksum_string(&hasher.finalize())))
}

/// Checks that `location` is a usable relative location: non-empty, no NUL, not absolute,
/// only normal components (no `..`, no `.`).
pub fn check_location(location: &str) -> io::Result<&Path> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("location {location:?}: {why}"),
        )
    };
    if location.is_empty() {
        return Err(bad("empty"));
    }
    if location.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if location.starts_with('/') {
        return Err(bad("must be relative to the silo root (no leading '/')"));
    }
    for part in location.split('/') {
        match part {
            ".." => return Err(bad("'..' is not allowed")),
            "." => return Err(bad("'.' components are not allowed")),
            "" => return Err(bad("empty path component ('//' or a trailing '/')")),
            _ => {}
        }
    }
    let path = Path::new(location);
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(bad("must be relative to the silo root"));
    }
    Ok(path)
}

/// Wraps a source reader: adds every byte read to `progress`, and fails the read once any
/// abort flag is set (so a driver's `stage` stops and cleans up its temporary file).
pub struct TaskReader {
    inner: ByteReader,
    progress: Arc<AtomicU64>,
    aborts: Vec<Arc<AtomicBool>>,
}

impl TaskReader {
    pub fn new(inner: ByteReader, progress: Arc<AtomicU64>, abort: Arc<AtomicBool>) -> Self {
        TaskReader {
            inner,
            progress,
            aborts: vec![abort],
        }
    }

    /// Also fail once `flag` is set.
    pub fn abort_also_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.aborts.push(flag);
        self
    }

    /// Boxed as a [`ByteReader`].
    pub fn boxed(self) -> ByteReader {
        Box::pin(self)
    }
}

impl AsyncRead for TaskReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.aborts.iter().any(|a| a.load(Ordering::Acquire)) {
            return Poll::Ready(Err(io::Error::other("copy aborted")));
        }
        let before = buf.filled().len();
        let r = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = (buf.filled().len() - before) as u64;
            self.progress.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked() {
        for ok in ["a", "a/b/c.bin", ".hidden/x", "a b/ü"] {
            assert!(check_location(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/abs",
            "../x",
            "a/../../x",
            "a/./b",
            "./a",
            "a\0b",
            "a/..",
            "a//b",
            "a/",
        ] {
            let e = check_location(bad).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
            assert!(e.to_string().contains("location"), "{e}");
        }
    }

    #[test]
    fn checksum_format() {
        let c = checksum_of(b"hello");
        assert!(c.starts_with("blake3:"));
        assert_eq!(c.len(), 7 + 64);
        assert!(is_verifiable(&c));
        assert!(!is_verifiable("sha256:abcd"));
        assert!(!is_verifiable("blake3:xyz"));
    }

    #[tokio::test]
    async fn task_reader_counts_and_aborts() {
        let data = vec![7u8; 3 * CHUNK + 5];
        let progress = Arc::new(AtomicU64::new(0));
        let abort = Arc::new(AtomicBool::new(false));
        let r = TaskReader::new(
            Box::pin(std::io::Cursor::new(data.clone())),
            progress.clone(),
            abort.clone(),
        );
        let (n, sum) = checksum_reader(r.boxed()).await.expect("read");
        assert_eq!(n, data.len() as u64);
        assert_eq!(progress.load(Ordering::Relaxed), n);
        assert_eq!(sum, checksum_of(&data));

        abort.store(true, Ordering::Release);
        let r = TaskReader::new(Box::pin(std::io::Cursor::new(data)), progress, abort);
        assert!(checksum_reader(r.boxed()).await.is_err());
    }
}
