//! [`PosixDriver`]: a silo that is a directory tree. An instance's location is a path
//! relative to the root. Writes are atomic: the bytes go to `.<name>.metad-tmp-<token>` in the
//! target's directory, are fsynced, renamed over the target, and the directory is fsynced.

use std::io;
use std::path::{Path, PathBuf};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::driver::{
    check_location, checksum_string, BoxFuture, ByteReader, SiloDriver, Staged, CHUNK,
};

/// Marker in the names of temporary files (`.<name>.metad-tmp-<token>`).
pub const TEMP_MARKER: &str = ".metad-tmp-";

/// A directory-tree silo rooted at `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosixDriver {
    root: PathBuf,
}

impl PosixDriver {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PosixDriver { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `location` (validated: see [`check_location`]).
    pub fn path_of(&self, location: &str) -> io::Result<PathBuf> {
        Ok(self.root.join(check_location(location)?))
    }

    async fn stage_impl(&self, location: &str, mut source: ByteReader) -> io::Result<Staged> {
        let target = self.path_of(location)?;
        let (dir, name) = match (target.parent(), target.file_name()) {
            (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("location {location:?} has no file name"),
                ))
            }
        };
        tokio::fs::create_dir_all(&dir).await?;
        let token: u64 = rand::thread_rng().gen();
        let tmp = dir.join(format!(".{name}{TEMP_MARKER}{token:016x}"));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await?;
        let written = async {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let n = source.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).await?;
                total += n as u64;
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok::<_, io::Error>((total, checksum_string(&hasher.finalize())))
        }
        .await;
        drop(file);
        match written {
            Ok((bytes, checksum)) => Ok(Staged {
                location: location.to_string(),
                bytes,
                checksum,
                handle: tmp.to_string_lossy().into_owned(),
            }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// The temp path of a staged copy, checked to be a temp file next to its location.
    fn staged_path(&self, staged: &Staged) -> io::Result<(PathBuf, PathBuf)> {
        let target = self.path_of(&staged.location)?;
        let tmp = PathBuf::from(&staged.handle);
        let ok = tmp.parent() == target.parent()
            && tmp
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(TEMP_MARKER));
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{:?} is not a staged copy of {:?}", staged.handle, target),
            ));
        }
        Ok((tmp, target))
    }
}

/// Removes `*.metad-tmp-*` files under `root` not modified for `max_age`.
fn sweep_temp_files(root: &Path, max_age: std::time::Duration) -> io::Result<u64> {
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_file()
            || !entry.file_name().to_string_lossy().contains(TEMP_MARKER)
        {
            continue;
        }
        let old = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= max_age);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// fsyncs a directory (so a rename or unlink in it is durable).
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = tokio::fs::File::open(dir).await?;
    d.sync_all().await
}

impl SiloDriver for PosixDriver {
    fn describe(&self) -> String {
        format!("posix:{}", self.root.display())
    }

    fn stat<'a>(&'a self, location: &'a str) -> BoxFuture<'a, io::Result<Option<u64>>> {
        Box::pin(async move {
            let path = self.path_of(location)?;
            match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a regular file", path.display()),
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn open<'a>(&'a self, location: &'a str) -> BoxFuture<'a, io::Result<ByteReader>> {
        Box::pin(async move {
            let path = self.path_of(location)?;
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
            Ok(Box::pin(f) as ByteReader)
        })
    }

    fn stage<'a>(
        &'a self,
        location: &'a str,
        source: ByteReader,
    ) -> BoxFuture<'a, io::Result<Staged>> {
        Box::pin(self.stage_impl(location, source))
    }

    fn publish(&self, staged: Staged) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let (tmp, target) = self.staged_path(&staged)?;
            if let Err(e) = tokio::fs::rename(&tmp, &target).await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(io::Error::new(
                    e.kind(),
                    format!("rename to {}: {e}", target.display()),
                ));
            }
            match target.parent() {
                Some(dir) => sync_dir(dir).await,
                None => Ok(()),
            }
        })
    }

    fn discard(&self, staged: Staged) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let (tmp, _) = self.staged_path(&staged)?;
            match tokio::fs::remove_file(&tmp).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn sweep_temp(&self, max_age: std::time::Duration) -> BoxFuture<'_, io::Result<u64>> {
        let root = self.root.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || sweep_temp_files(&root, max_age))
                .await
                .map_err(io::Error::other)?
        })
    }

    fn delete<'a>(&'a self, location: &'a str) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async move {
            let path = self.path_of(location)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        sync_dir(dir).await?;
                    }
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("delete {}: {e}", path.display()),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver::checksum_of;
    use super::*;

    fn reader(bytes: Vec<u8>) -> ByteReader {
        Box::pin(std::io::Cursor::new(bytes))
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Deterministic, not compressible-looking bytes.
    fn data(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn atomic_write_leaves_no_temp_file_and_checksums_a_multi_mib_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = PosixDriver::new(dir.path());
        let bytes = data(5 * CHUNK + 12_345);
        let (n, sum) = d
            .write("deep/er/file.bin", reader(bytes.clone()))
            .await
            .expect("write");
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(sum, checksum_of(&bytes));
        let on_disk = std::fs::read(dir.path().join("deep/er/file.bin")).expect("read back");
        assert_eq!(on_disk, bytes);
        assert_eq!(files_in(&dir.path().join("deep/er")), ["file.bin"]);
        assert_eq!(d.stat("deep/er/file.bin").await.expect("stat"), Some(n));
        assert_eq!(
            d.checksum("deep/er/file.bin").await.expect("checksum"),
            (n, sum)
        );

        // Overwrite in place: the new bytes replace the old ones, still no temp file.
        let (n2, sum2) = d
            .write("deep/er/file.bin", reader(b"short".to_vec()))
            .await
            .expect("rewrite");
        assert_eq!((n2, sum2), (5, checksum_of(b"short")));
        assert_eq!(files_in(&dir.path().join("deep/er")), ["file.bin"]);
    }

    #[tokio::test]
    async fn staged_bytes_are_invisible_until_published_and_discard_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = PosixDriver::new(dir.path());
        let staged = d.stage("x.bin", reader(data(1000))).await.expect("stage");
        assert_eq!(d.stat("x.bin").await.expect("stat"), None);
        let names = files_in(dir.path());
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with(".x.bin.metad-tmp-"), "{names:?}");
        d.discard(staged).await.expect("discard");
        assert!(files_in(dir.path()).is_empty());

        let staged = d.stage("x.bin", reader(data(10))).await.expect("stage");
        d.publish(staged).await.expect("publish");
        assert_eq!(files_in(dir.path()), ["x.bin"]);
    }

    #[tokio::test]
    async fn a_failing_source_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = PosixDriver::new(dir.path());
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let abort = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = super::super::driver::TaskReader::new(reader(data(100)), progress, abort);
        assert!(d.stage("y.bin", r.boxed()).await.is_err());
        assert!(files_in(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn bad_locations_are_refused_and_deletes_tolerate_absence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = PosixDriver::new(dir.path().join("root"));
        for bad in ["../escape", "/etc/passwd", "a/../../b", "nul\0"] {
            let e = d
                .write(bad, reader(b"x".to_vec()))
                .await
                .expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
            assert!(d.stat(bad).await.is_err());
            assert!(d.delete(bad).await.is_err());
        }
        assert!(
            !dir.path().join("escape").exists(),
            "nothing written outside"
        );
        assert!(!d.delete("missing").await.expect("delete"));
        d.write("present", reader(b"1".to_vec()))
            .await
            .expect("write");
        assert!(d.delete("present").await.expect("delete"));
        assert_eq!(d.stat("present").await.expect("stat"), None);
    }

    #[tokio::test]
    async fn stale_temp_files_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = PosixDriver::new(dir.path());
        d.write("keep/x.bin", reader(b"x".to_vec()))
            .await
            .expect("write");
        let staged = d
            .stage("keep/y.bin", reader(b"y".to_vec()))
            .await
            .expect("stage");
        assert_eq!(
            d.sweep_temp(std::time::Duration::from_secs(3600))
                .await
                .expect("sweep"),
            0,
            "a fresh temp file is someone's copy in progress"
        );
        assert_eq!(
            d.sweep_temp(std::time::Duration::ZERO)
                .await
                .expect("sweep"),
            1
        );
        assert_eq!(files_in(&dir.path().join("keep")), ["x.bin"]);
        assert!(d.publish(staged).await.is_err(), "its copy is gone");
    }

    #[tokio::test]
    async fn publish_refuses_a_foreign_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = PosixDriver::new(dir.path());
        let forged = Staged {
            location: "a".into(),
            bytes: 0,
            checksum: String::new(),
            handle: "/etc/passwd".into(),
        };
        assert!(d.publish(forged).await.is_err());
    }
}
