//! `metactl import DIR --silo NAME --into /ns/path`: registers files that already exist on a
//! silo (assimilation in place; no bytes are copied). Walks DIR (which must be inside the
//! silo's root), computes each file's BLAKE3 checksum unless `--no-checksum`, and sends
//! ImportFiles batches with a progress bar; prints a summary. Re-running changes nothing.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::commands::Output;
use super::output::View;
use super::table;
use super::topo::human_bytes;
use crate::agent::posix::TEMP_MARKER;
use crate::{pb, Client, ClientError, ErrorCode, ReadOptions};

/// Examples of each problem kept for the summary.
const EXAMPLES: usize = 10;

#[derive(Debug, Clone, Subcommand)]
pub enum ImportCmd {
    /// Register files that already exist on a silo (no data copied).
    #[command(long_about = "\
Register the files under DIR, which already sit on silo SILO, in the namespace under --into:
missing directories and files are created and each file gets a valid copy (instance) on the
silo, at the location DIR/<relative path> (relative to the silo's root). DIR must be inside
the silo's registered root. No bytes are copied or changed.

Each file's BLAKE3 checksum is computed (it lets agents verify copies later); --no-checksum
skips that for speed. Symlinks and special files are skipped and counted; unreadable files
are reported. Re-running the same import changes nothing (files already registered on the
silo are `unchanged`); a file that exists in the namespace with a different size or checksum
is a conflict and is left alone.

Example:
    metactl import /srv/nas1/projects/ml --silo nas1 --into /ml
    metactl import /srv/nas1/scratch --silo nas1 --into /scratch --no-checksum --batch 1000")]
    Import(ImportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Directory to import (inside the silo's root).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The silo DIR is on.
    #[arg(long, value_name = "NAME")]
    pub silo: String,
    /// Namespace directory the files appear under (absolute).
    #[arg(long, value_name = "/NS/PATH")]
    pub into: String,
    /// Files per request (1-1000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// Do not compute checksums.
    #[arg(long)]
    pub no_checksum: bool,
}

/// One file found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub abs: PathBuf,
    /// Namespace path.
    pub path: String,
    /// Relative to the silo root.
    pub location: String,
    pub size: u64,
    pub mtime_ms: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Problem {
    pub path: String,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
pub struct ImportView {
    pub silo: String,
    pub into: String,
    pub files: u64,
    pub bytes: u64,
    pub created: u64,
    pub instances_added: u64,
    pub unchanged: u64,
    pub conflicts: u64,
    pub directories_created: u64,
    pub symlinks_skipped: u64,
    pub other_skipped: u64,
    pub unreadable: u64,
    pub conflict_examples: Vec<Problem>,
    pub unreadable_examples: Vec<Problem>,
    pub elapsed_ms: u64,
}

impl View for ImportView {
    fn table(&self) -> String {
        let mut rows = vec![
            vec![
                "files:".to_string(),
                format!("{} ({})", self.files, human_bytes(self.bytes)),
            ],
            vec!["created:".into(), self.created.to_string()],
            vec!["instances added:".into(), self.instances_added.to_string()],
            vec!["unchanged:".into(), self.unchanged.to_string()],
            vec!["conflicts:".into(), self.conflicts.to_string()],
            vec![
                "directories created:".into(),
                self.directories_created.to_string(),
            ],
            vec![
                "symlinks skipped:".into(),
                self.symlinks_skipped.to_string(),
            ],
        ];
        if self.other_skipped > 0 {
            rows.push(vec![
                "other skipped:".into(),
                self.other_skipped.to_string(),
            ]);
        }
        rows.push(vec!["unreadable:".into(), self.unreadable.to_string()]);
        rows.push(vec![
            "elapsed:".into(),
            format!("{:.1}s", self.elapsed_ms as f64 / 1000.0),
        ]);
        let mut out = format!(
            "imported into {} from silo {}\n{}",
            self.into,
            self.silo,
            table::render(&[], &rows)
        );
        for (title, list) in [
            ("conflicts", &self.conflict_examples),
            ("unreadable", &self.unreadable_examples),
        ] {
            if !list.is_empty() {
                out.push_str(&format!("{title} (first {}):\n", list.len()));
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|p| vec![format!("  {}", p.path), p.detail.clone()])
                    .collect();
                out.push_str(&table::render(&[], &rows));
            }
        }
        out
    }
}

fn invalid(msg: String) -> ClientError {
    ClientError::rpc(ErrorCode::InvalidArgument, msg)
}

/// Joins a namespace directory and a relative path with '/'.
pub fn ns_join(into: &str, rel: &str) -> String {
    let base = into.trim_end_matches('/');
    if rel.is_empty() {
        if base.is_empty() {
            "/".into()
        } else {
            base.to_string()
        }
    } else {
        format!("{base}/{rel}")
    }
}

/// `rel` as a '/'-separated UTF-8 string, or why not.
fn rel_str(rel: &Path) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| "name is not valid UTF-8".to_string())?
                    .to_string(),
            ),
            other => return Err(format!("unexpected path component {other:?}")),
        }
    }
    Ok(parts.join("/"))
}

/// Walks `dir` (canonical, inside the canonical silo `root`): the files to import, and the
/// counts of what was skipped.
pub fn walk(dir: &Path, root: &Path, into: &str, view: &mut ImportView) -> Vec<Found> {
    let base = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                note(
                    &mut view.unreadable,
                    &mut view.unreadable_examples,
                    path,
                    e.to_string(),
                );
                continue;
            }
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        if ft.is_symlink() {
            view.symlinks_skipped += 1;
            continue;
        }
        if !ft.is_file() {
            view.other_skipped += 1;
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if name.contains(TEMP_MARKER) {
            // An agent's temporary file (a copy in progress or abandoned).
            view.other_skipped += 1;
            continue;
        }
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let (rel, loc) = match (rel_str(rel), rel_str(&base.join(rel))) {
            (Ok(r), Ok(l)) => (r, l),
            (Err(e), _) | (_, Err(e)) => {
                note(
                    &mut view.unreadable,
                    &mut view.unreadable_examples,
                    entry.path().display().to_string(),
                    e,
                );
                continue;
            }
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                note(
                    &mut view.unreadable,
                    &mut view.unreadable_examples,
                    entry.path().display().to_string(),
                    e.to_string(),
                );
                continue;
            }
        };
        let mtime_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        out.push(Found {
            abs: entry.path().to_path_buf(),
            path: ns_join(into, &rel),
            location: loc,
            size: meta.len(),
            mtime_ms,
        });
    }
    out
}

fn note(count: &mut u64, examples: &mut Vec<Problem>, path: String, detail: String) {
    *count += 1;
    if examples.len() < EXAMPLES {
        examples.push(Problem { path, detail });
    }
}

/// BLAKE3 of a file, streamed (on a blocking thread).
async fn hash_file(path: PathBuf) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut h = blake3::Hasher::new();
        std::io::copy(&mut f, &mut h).map_err(|e| e.to_string())?;
        Ok(crate::agent::driver::checksum_string(&h.finalize()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Runs `metactl import`.
pub async fn execute(client: &Client, cmd: &ImportCmd, json: bool) -> Result<Output, ClientError> {
    let ImportCmd::Import(a) = cmd;
    let started = std::time::Instant::now();
    if !a.into.starts_with('/') {
        return Err(invalid(format!(
            "--into {:?}: must be an absolute namespace path",
            a.into
        )));
    }
    let silos = client.list_silos("", ReadOptions::default()).await?;
    let silo = silos
        .silos
        .iter()
        .find(|s| s.name == a.silo)
        .ok_or_else(|| ClientError::rpc(ErrorCode::NotFound, format!("no silo {:?}", a.silo)))?;
    let root = std::fs::canonicalize(&silo.root).map_err(|e| {
        invalid(format!(
            "silo {} root {:?} is not a directory on this machine: {e}",
            silo.name, silo.root
        ))
    })?;
    let dir =
        std::fs::canonicalize(&a.dir).map_err(|e| invalid(format!("{}: {e}", a.dir.display())))?;
    if !dir.is_dir() {
        return Err(invalid(format!("{}: not a directory", dir.display())));
    }
    if !dir.starts_with(&root) {
        return Err(invalid(format!(
            "{} is not inside the root of silo {} ({})",
            dir.display(),
            silo.name,
            root.display()
        )));
    }

    let mut view = ImportView {
        silo: a.silo.clone(),
        into: a.into.clone(),
        ..Default::default()
    };
    let (walk_dir, walk_root, walk_into) = (dir.clone(), root.clone(), a.into.clone());
    let (found, walked) = tokio::task::spawn_blocking(move || {
        let mut v = ImportView::default();
        let found = walk(&walk_dir, &walk_root, &walk_into, &mut v);
        (found, v)
    })
    .await
    .map_err(|e| ClientError::rpc(ErrorCode::Internal, format!("walk: {e}")))?;
    view.symlinks_skipped = walked.symlinks_skipped;
    view.other_skipped = walked.other_skipped;
    view.unreadable = walked.unreadable;
    view.unreadable_examples = walked.unreadable_examples;
    view.files = found.len() as u64;
    view.bytes = found.iter().map(|f| f.size).sum();

    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(view.bytes), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut sent = 0u64;
    for chunk in found.chunks(a.batch as usize) {
        let entries = entries_of(chunk, !a.no_checksum, &mut view).await;
        if entries.is_empty() {
            continue;
        }
        let r = client.import_files(&a.silo, entries).await?;
        view.created += u64::from(r.created);
        view.instances_added += u64::from(r.instances_added);
        view.unchanged += u64::from(r.unchanged);
        view.conflicts += u64::from(r.conflicts);
        view.directories_created += u64::from(r.directories_created);
        for res in r.results {
            if res.outcome == pb::ImportOutcome::Conflict as i32
                && view.conflict_examples.len() < EXAMPLES
            {
                view.conflict_examples.push(Problem {
                    path: res.path,
                    detail: res.detail,
                });
            }
        }
        sent += chunk.len() as u64;
        bar.inc(chunk.iter().map(|f| f.size).sum());
        bar.set_message(format!("{sent}/{} files", view.files));
    }
    bar.finish_and_clear();
    view.elapsed_ms = started.elapsed().as_millis() as u64;
    Output::of(&view)
}

/// The import entries of `chunk` (checksums computed, a few files at a time); unreadable
/// files are noted in `view` and left out.
async fn entries_of(
    chunk: &[Found],
    checksum: bool,
    view: &mut ImportView,
) -> Vec<pb::ImportEntry> {
    let sums: Vec<Result<String, String>> = if checksum {
        // Futures collected first: a lazily mapped iterator would make the command's future
        // not `Send` (its closure borrows the chunk).
        let hashes: Vec<_> = chunk.iter().map(|f| hash_file(f.abs.clone())).collect();
        futures::stream::iter(hashes).buffered(4).collect().await
    } else {
        chunk.iter().map(|_| Ok(String::new())).collect()
    };
    let mut out = Vec::with_capacity(chunk.len());
    for (f, sum) in chunk.iter().zip(sums) {
        match sum {
            Ok(checksum) => out.push(pb::ImportEntry {
                path: f.path.clone(),
                size: f.size,
                mtime_ms: f.mtime_ms,
                checksum,
                location: f.location.clone(),
            }),
            Err(e) => {
                view.files = view.files.saturating_sub(1);
                view.bytes = view.bytes.saturating_sub(f.size);
                note(
                    &mut view.unreadable,
                    &mut view.unreadable_examples,
                    f.abs.display().to_string(),
                    e,
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("metactl").chain(args.iter().copied()))
    }

    #[test]
    fn import_grammar() {
        let cli = parse(&["import", "/srv/a", "--silo", "s", "--into", "/x"]).expect("parse");
        let Command::Import(ImportCmd::Import(a)) = cli.command else {
            panic!("not import")
        };
        assert_eq!(a.dir, PathBuf::from("/srv/a"));
        assert_eq!((a.batch, a.no_checksum), (500, false));
        let cli = parse(&[
            "import",
            "d",
            "--silo",
            "s",
            "--into",
            "/x",
            "--batch",
            "1000",
            "--no-checksum",
        ])
        .expect("parse");
        let Command::Import(ImportCmd::Import(a)) = cli.command else {
            panic!("not import")
        };
        assert_eq!((a.batch, a.no_checksum), (1000, true));
        assert!(parse(&["import", "d", "--silo", "s", "--into", "/x", "--batch", "1001"]).is_err());
        assert!(parse(&["import", "d", "--silo", "s", "--into", "/x", "--batch", "0"]).is_err());
        assert!(
            parse(&["import", "d", "--into", "/x"]).is_err(),
            "--silo required"
        );
    }

    #[test]
    fn namespace_paths_join() {
        assert_eq!(ns_join("/ml", "a/b"), "/ml/a/b");
        assert_eq!(ns_join("/ml/", "a"), "/ml/a");
        assert_eq!(ns_join("/", "a"), "/a");
        assert_eq!(ns_join("/", ""), "/");
    }

    #[test]
    fn walk_finds_files_with_locations_relative_to_the_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(t.path()).expect("canon");
        let dir = root.join("proj");
        std::fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
        std::fs::write(dir.join("a.bin"), b"aaaa").expect("write");
        std::fs::write(dir.join("sub/deeper/b.txt"), b"bb").expect("write");
        std::fs::write(dir.join("sub/.c.metad-tmp-00ff"), b"tmp").expect("write");
        std::os::unix::fs::symlink(dir.join("a.bin"), dir.join("link")).expect("symlink");
        let mut v = ImportView::default();
        let found = walk(&dir, &root, "/ml", &mut v);
        let got: Vec<(&str, &str, u64)> = found
            .iter()
            .map(|f| (f.path.as_str(), f.location.as_str(), f.size))
            .collect();
        assert_eq!(
            got,
            [
                ("/ml/a.bin", "proj/a.bin", 4),
                ("/ml/sub/deeper/b.txt", "proj/sub/deeper/b.txt", 2)
            ]
        );
        assert_eq!(v.symlinks_skipped, 1);
        assert_eq!(v.other_skipped, 1, "agent temp files are skipped");
        assert_eq!(v.unreadable, 0);
        assert!(found.iter().all(|f| f.mtime_ms > 0));
    }

    #[tokio::test]
    async fn checksums_match_the_agent_format() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        let data = vec![3u8; 3 << 20];
        std::fs::write(&p, &data).expect("write");
        let sum = hash_file(p).await.expect("hash");
        assert_eq!(sum, crate::agent::checksum_of(&data));
        assert!(hash_file(t.path().join("missing")).await.is_err());
    }
}
