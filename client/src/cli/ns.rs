//! `metactl` namespace commands: mkdir, touch, ls, stat, mv, rm, ln (namespace work), with their
//! output views (JSON shape and table).

mod view;

use clap::Subcommand;

pub use view::{
    format_ms, mode_string, ChangeView, EntryView, InodeView, LsView, RmView, StatView,
};

use super::commands::Output;
use crate::{pb, Client, ClientError, ErrorCode, ReadOptions};

/// Page size `ls` and `rm -r` read directories with.
const PAGE: u32 = 1000;

#[derive(Debug, Clone, Subcommand)]
pub enum NsCmd {
    /// Create a directory (-p: with missing parents, no error if it exists).
    #[command(long_about = "\
Create directory PATH. With -p, also create missing parent directories, and succeed without
change if PATH already is a directory.

Example:
    metactl mkdir -p /ml/imagenet/train")]
    Mkdir {
        /// Create missing parents; no error if PATH already is a directory.
        #[arg(short = 'p', long)]
        parents: bool,
        /// Absolute path of the directory.
        path: String,
    },
    /// Create an empty file, or update the mtime of an existing one.
    #[command(long_about = "\
Create file PATH; if it already exists, set its mtime to now (like touch(1)).

Example:
    metactl touch /ml/imagenet/README")]
    Touch {
        /// Absolute path of the file.
        path: String,
    },
    /// List a directory (-l: with kind, mode, size, mtime, inode).
    #[command(long_about = "\
List directory PATH (default /), paging through it 1000 entries at a time, in name order.
A path that is not a directory is shown as a single entry.

Example:
    metactl ls -l /ml
    metactl ls /ml -o json")]
    Ls {
        /// Long format: kind and mode, uid, gid, size, mtime, inode number.
        #[arg(short = 'l', long)]
        long: bool,
        /// Absolute path of the directory (or object) to list.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Show an object's attributes.
    #[command(long_about = "\
Show the attributes of PATH (symlinks are not followed).

Example:
    metactl stat /ml/imagenet")]
    Stat {
        /// Absolute path of the object.
        path: String,
    },
    /// Rename (move) SRC to DST atomically.
    #[command(long_about = "\
Rename SRC to DST atomically. An existing DST is replaced if the kinds allow it (a file by a
file, an empty directory by a directory); a directory cannot move into its own subtree.
--no-replace refuses an existing DST; --exchange swaps SRC and DST.

Example:
    metactl mv /ml/tmp /ml/imagenet --no-replace")]
    Mv {
        /// Absolute path of the object to move.
        src: String,
        /// Absolute path it gets.
        dst: String,
        /// Fail if DST exists.
        #[arg(long, conflicts_with = "exchange")]
        no_replace: bool,
        /// Atomically swap SRC and DST (both must exist).
        #[arg(long)]
        exchange: bool,
    },
    /// Remove a file or symlink (-r: a directory tree, bottom-up).
    #[command(long_about = "\
Remove file or symlink PATH. With -r, remove a directory and everything below it, deepest
entries first (progress on stderr); each removal is its own atomic operation, so an
interrupted rm -r leaves a smaller but valid tree.

Example:
    metactl rm /ml/old.tar
    metactl rm -r /ml/scratch")]
    Rm {
        /// Remove directories and their contents.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Absolute path of the object to remove.
        path: String,
    },
    /// Create a symbolic link PATH -> TARGET (-s is required).
    #[command(long_about = "\
Create a symbolic link PATH holding TARGET. metad never follows symlinks; the target is stored
as given. Only symbolic links exist (-s is required).

Example:
    metactl ln -s /ml/imagenet/v2 /ml/imagenet/current")]
    Ln {
        /// Symbolic link (the only kind of link metad has).
        #[arg(short = 's', long)]
        symbolic: bool,
        /// What the link points at (stored as given, never resolved).
        target: String,
        /// Absolute path of the new link.
        path: String,
    },
}

/// Parses a whole `metactl` command line (argv[0] first) and runs it, returning its output in
/// both forms. For tests and tools that embed metactl; usage errors are `InvalidConfig`.
pub async fn run_argv<I, T>(argv: I) -> Result<Output, ClientError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    let cli =
        super::Cli::try_parse_from(argv).map_err(|e| ClientError::InvalidConfig(e.to_string()))?;
    super::commands::execute(&cli).await
}

pub async fn execute(client: &Client, cmd: &NsCmd) -> Result<Output, ClientError> {
    match cmd {
        NsCmd::Mkdir { parents, path } => {
            let r = client.mkdir(path, *parents).await?;
            let action = match r.created {
                0 => "exists",
                _ => "created",
            };
            Output::of(&ChangeView::new(action, path, r.inode, r.header))
        }
        NsCmd::Touch { path } => touch(client, path).await,
        NsCmd::Ls { long, path } => ls(client, path, *long).await,
        NsCmd::Stat { path } => {
            let r = client.stat(path, ReadOptions::default()).await?;
            Output::of(&StatView::new(
                &r.path,
                r.inode.unwrap_or_default(),
                r.header,
            ))
        }
        NsCmd::Mv {
            src,
            dst,
            no_replace,
            exchange,
        } => {
            let mode = if *exchange {
                pb::RenameMode::Exchange
            } else if *no_replace {
                pb::RenameMode::NoReplace
            } else {
                pb::RenameMode::Replace
            };
            let r = client.rename(src, dst, mode).await?;
            let action = match (mode, r.replaced.is_some()) {
                (pb::RenameMode::Exchange, _) => "exchanged",
                (_, true) => "renamed (replaced destination)",
                _ => "renamed",
            };
            let mut v = ChangeView::new(action, dst, r.inode, r.header);
            v.from = Some(src.clone());
            Output::of(&v)
        }
        NsCmd::Rm { recursive, path } => rm(client, path, *recursive).await,
        NsCmd::Ln {
            symbolic,
            target,
            path,
        } => {
            if !symbolic {
                return Err(ClientError::InvalidConfig(
                    "ln: only symbolic links exist in metad; use ln -s TARGET PATH".into(),
                ));
            }
            let r = client.symlink(path, target).await?;
            Output::of(&ChangeView::new("created", path, r.inode, r.header))
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn touch(client: &Client, path: &str) -> Result<Output, ClientError> {
    match client.create(path).await {
        Ok(r) => Output::of(&ChangeView::new("created", path, r.inode, r.header)),
        Err(e) if e.code() == ErrorCode::AlreadyExists => {
            let r = client
                .set_attr(pb::SetAttrRequest {
                    path: path.to_string(),
                    mtime_ms: Some(now_ms()),
                    ..Default::default()
                })
                .await?;
            Output::of(&ChangeView::new("touched", path, r.inode, r.header))
        }
        Err(e) => Err(e),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

async fn ls(client: &Client, path: &str, long: bool) -> Result<Output, ClientError> {
    let st = client.stat(path, ReadOptions::default()).await?;
    let inode = st.inode.unwrap_or_default();
    let mut revision = st.header.map(|h| h.revision).unwrap_or(0);
    let mut entries = Vec::new();
    if inode.kind != pb::InodeKind::Directory as i32 {
        entries.push(EntryView::new(inode.name.clone(), &inode, long));
    } else {
        // Every page at (at least) the revision of the first answer: read-your-listing.
        let mut cursor = String::new();
        loop {
            let opts = ReadOptions::default().min_revision(revision);
            let page = client.read_dir(path, &cursor, PAGE, long, opts).await?;
            revision = revision.max(page.header.map(|h| h.revision).unwrap_or(0));
            for e in page.entries {
                let attrs = e.attrs.unwrap_or(pb::Inode {
                    ino: e.ino,
                    kind: e.kind,
                    ..Default::default()
                });
                entries.push(EntryView::new(e.name, &attrs, long));
            }
            if page.next_start_after.is_empty() {
                break;
            }
            cursor = page.next_start_after;
        }
    }
    Output::of(&LsView {
        path: path.to_string(),
        long,
        entries,
        revision,
    })
}

async fn rm(client: &Client, path: &str, recursive: bool) -> Result<Output, ClientError> {
    let st = client.stat(path, ReadOptions::default()).await?;
    let inode = st.inode.unwrap_or_default();
    if inode.kind != pb::InodeKind::Directory as i32 {
        let r = client.unlink(path).await?;
        return Output::of(&RmView {
            path: path.to_string(),
            removed: 1,
            revision: r.header.map(|h| h.revision).unwrap_or(0),
        });
    }
    if !recursive {
        return Err(ClientError::rpc(
            ErrorCode::FailedPrecondition,
            format!("{path} is a directory (use rm -r)"),
        ));
    }
    // Depth first, deepest entries first; re-list a directory until it is empty.
    let mut removed = 0u64;
    let mut revision = 0u64;
    let mut stack = vec![path.to_string()];
    while let Some(dir) = stack.last().cloned() {
        let page = client
            .read_dir(&dir, "", PAGE, false, ReadOptions::default())
            .await?;
        if page.entries.is_empty() {
            let r = client.rmdir(&dir).await?;
            revision = r.header.map(|h| h.revision).unwrap_or(revision);
            removed += 1;
            stack.pop();
        }
        for e in page.entries {
            let p = join(&dir, &e.name);
            if e.kind == pb::InodeKind::Directory as i32 {
                stack.push(p);
            } else {
                let r = client.unlink(&p).await?;
                revision = r.header.map(|h| h.revision).unwrap_or(revision);
                removed += 1;
                if removed.is_multiple_of(1000) {
                    eprintln!("rm: {removed} entries removed so far (now in {dir})");
                }
            }
        }
    }
    Output::of(&RmView {
        path: path.to_string(),
        removed,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command};
    use crate::cli::output::View;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("metactl").chain(args.iter().copied()))
    }

    fn ns(args: &[&str]) -> NsCmd {
        match parse(args).expect("parses").command {
            Command::Ns(c) => c,
            other => panic!("not a namespace command: {other:?}"),
        }
    }

    #[test]
    fn grammar() {
        assert!(matches!(
            ns(&["mkdir", "-p", "/a/b"]),
            NsCmd::Mkdir { parents: true, ref path } if path == "/a/b"
        ));
        assert!(matches!(ns(&["ls"]), NsCmd::Ls { long: false, ref path } if path == "/"));
        assert!(matches!(
            ns(&["ls", "-l", "/x", "-o", "json"]),
            NsCmd::Ls { long: true, .. }
        ));
        assert!(matches!(
            ns(&["mv", "/a", "/b", "--exchange"]),
            NsCmd::Mv {
                exchange: true,
                no_replace: false,
                ..
            }
        ));
        assert!(parse(&["mv", "/a", "/b", "--exchange", "--no-replace"]).is_err());
        assert!(matches!(
            ns(&["rm", "-r", "/a"]),
            NsCmd::Rm {
                recursive: true,
                ..
            }
        ));
        assert!(matches!(
            ns(&["ln", "-s", "t", "/l"]),
            NsCmd::Ln { symbolic: true, ref target, ref path } if target == "t" && path == "/l"
        ));
        assert!(matches!(ns(&["touch", "/f"]), NsCmd::Touch { .. }));
        assert!(matches!(ns(&["stat", "/f"]), NsCmd::Stat { .. }));
    }

    #[test]
    fn formatting() {
        assert_eq!(
            mode_string(pb::InodeKind::Directory as i32, 0o755),
            "drwxr-xr-x"
        );
        assert_eq!(mode_string(pb::InodeKind::File as i32, 0o640), "-rw-r-----");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        let v = StatView::new(
            "/f",
            pb::Inode {
                ino: 5,
                kind: pb::InodeKind::File as i32,
                mode: 0o644,
                ..Default::default()
            },
            None,
        );
        let json = serde_json::to_value(&v).expect("json");
        assert_eq!(json["ino"], 5);
        assert_eq!(json["kind"], "file");
        assert_eq!(json["mode"], "0644");
        assert!(v.table().contains("inode:"));
    }
}
