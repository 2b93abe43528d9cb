//! `metactl` tag commands: `tag set|rm|get|keys` and `find` (tags work).

use clap::{Args, Subcommand};
use serde::Serialize;

use super::commands::Output;
use super::output::View;
use super::table;
use crate::{Client, ClientError, ErrorCode, ReadOptions};

#[derive(Debug, Clone, Subcommand)]
pub enum TagsCmd {
    /// Set, remove and read tags (user-defined key=value metadata on files and directories).
    #[command(subcommand)]
    Tag(TagCmd),
    /// Find files and directories by tag expression.
    #[command(long_about = "\
Find every inode under SCOPE whose effective tags (own + inherited) satisfy EXPR, served from \
the tag index, in inode-number order.

Expression language:
  k=v            k is set to v             k!=v         not (k=v): also true if k is unset
  k in (a,b)     k is one of a, b          has(k)       k is set
  not E, E and E, E or E, ( E )            values with spaces or keywords: \"quoted\" or 'quoted'

Examples:
  metactl find /ml --where 'dataset=imagenet and stage=clean'
  metactl find / --where 'tier=hot and not has(pii)' -o json
  metactl find /data --where 'project in (a,b)' --limit 100 --cursor i1234")]
    Find(FindArgs),
}

#[derive(Debug, Clone, Subcommand)]
pub enum TagCmd {
    /// Set tags on a path.
    #[command(long_about = "\
Set (add or overwrite) tags on a path. With --inherit the tags also apply to every descendant \
of a directory that does not set the same key itself.

Limits: key 1..=128 bytes of [A-Za-z0-9._:/-], value at most 4096 bytes, 256 tags per inode.

Examples:
  metactl tag set /ml/imagenet dataset=imagenet stage=clean
  metactl tag set /hot tier=hot --inherit")]
    Set {
        /// Absolute path of the file or directory.
        path: String,
        /// One or more KEY=VALUE pairs.
        #[arg(required = true, value_parser = parse_pair)]
        tags: Vec<(String, String)>,
        /// Make the tags inheritable by every descendant.
        #[arg(long)]
        inherit: bool,
    },
    /// Remove tags from a path by key.
    #[command(long_about = "\
Remove tags by key; keys that are not set are ignored.

Example:
  metactl tag rm /ml/imagenet stage owner")]
    Rm {
        path: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Show the tags of a path.
    #[command(long_about = "\
Show the tags a path sets itself, or with --effective also those it inherits (SOURCE names the \
ancestor each inherited tag comes from).

Examples:
  metactl tag get /ml/imagenet/train/0001.jpg --effective
  metactl tag get /hot -o json")]
    Get {
        path: String,
        /// Own + inherited tags, with where each comes from.
        #[arg(long)]
        effective: bool,
    },
    /// List the tag keys in use, with the number of inodes setting each.
    #[command(long_about = "\
List the catalogue of tag keys with the number of inodes that set each key themselves.

Examples:
  metactl tag keys
  metactl tag keys --after owner --limit 50 -o json")]
    Keys {
        /// Start after this key.
        #[arg(long, default_value = "")]
        after: String,
        /// At most this many keys (≤ 10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Debug, Clone, Args)]
pub struct FindArgs {
    /// Only inodes at or below this path.
    pub scope: String,
    /// The tag expression.
    #[arg(long = "where", short = 'w')]
    pub expr: String,
    /// At most this many matches (≤ 10000); a cursor is printed if more follow.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Resume after a cursor printed by a previous `find`.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow cursors and print every match.
    #[arg(long, conflicts_with = "cursor")]
    pub all: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Serialize)]
struct ChangeView {
    path: String,
    action: &'static str,
    changed: Vec<String>,
    revision: u64,
}

impl View for ChangeView {
    fn table(&self) -> String {
        if self.changed.is_empty() {
            format!(
                "{}: nothing changed (revision {})\n",
                self.path, self.revision
            )
        } else {
            format!(
                "{}: {} {} (revision {})\n",
                self.path,
                self.action,
                self.changed.join(", "),
                self.revision
            )
        }
    }
}

#[derive(Debug, Serialize)]
struct TagRow {
    key: String,
    value: String,
    inherit: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

#[derive(Debug, Serialize)]
struct TagsView {
    path: String,
    ino: u64,
    effective: bool,
    tags: Vec<TagRow>,
    revision: u64,
}

impl View for TagsView {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .tags
            .iter()
            .map(|t| {
                vec![
                    t.key.clone(),
                    t.value.clone(),
                    if t.inherit { "yes" } else { "no" }.to_string(),
                    t.source.clone().unwrap_or_else(|| "(own)".to_string()),
                ]
            })
            .collect();
        if rows.is_empty() {
            return format!("{}: no tags\n", self.path);
        }
        table::render(&["KEY", "VALUE", "INHERIT", "SOURCE"], &rows)
    }
}

#[derive(Debug, Serialize)]
struct KeysView {
    keys: Vec<KeyRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
    revision: u64,
}

#[derive(Debug, Serialize)]
struct KeyRow {
    key: String,
    count: u64,
}

impl View for KeysView {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .keys
            .iter()
            .map(|k| vec![k.key.clone(), k.count.to_string()])
            .collect();
        let mut s = table::render(&["KEY", "INODES"], &rows);
        if let Some(a) = &self.next_after {
            s.push_str(&format!("(more: --after {a})\n"));
        }
        s
    }
}

#[derive(Debug, Serialize)]
struct FindView {
    scope: String,
    expr: String,
    matches: Vec<MatchRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
    plan: String,
    revision: u64,
}

#[derive(Debug, Serialize)]
struct MatchRow {
    path: String,
    ino: u64,
    kind: &'static str,
}

impl View for FindView {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .matches
            .iter()
            .map(|m| vec![m.path.clone(), m.kind.to_string(), m.ino.to_string()])
            .collect();
        let mut s = if rows.is_empty() {
            "no matches\n".to_string()
        } else {
            table::render(&["PATH", "KIND", "INO"], &rows)
        };
        if let Some(c) = &self.next_cursor {
            s.push_str(&format!("(more: --cursor {c})\n"));
        }
        s
    }
}

fn kind_name(k: crate::pb::InodeKind) -> &'static str {
    match k {
        crate::pb::InodeKind::Directory => "dir",
        crate::pb::InodeKind::File => "file",
        crate::pb::InodeKind::Symlink => "symlink",
        crate::pb::InodeKind::Unspecified => "unknown",
    }
}

pub async fn execute(client: &Client, cmd: &TagsCmd) -> Result<Output, ClientError> {
    match cmd {
        TagsCmd::Tag(TagCmd::Set {
            path,
            tags,
            inherit,
        }) => {
            let r = client.set_tags(path, tags, *inherit).await?;
            Output::of(&ChangeView {
                path: path.clone(),
                action: "set",
                changed: r.keys,
                revision: r.header.revision,
            })
        }
        TagsCmd::Tag(TagCmd::Rm { path, keys }) => {
            let r = client.remove_tags(path, keys).await?;
            Output::of(&ChangeView {
                path: path.clone(),
                action: "removed",
                changed: r.keys,
                revision: r.header.revision,
            })
        }
        TagsCmd::Tag(TagCmd::Get { path, effective }) => {
            let r = client
                .get_tags(path, *effective, ReadOptions::default())
                .await?;
            Output::of(&TagsView {
                path: path.clone(),
                ino: r.ino,
                effective: *effective,
                tags: r
                    .tags
                    .into_iter()
                    .map(|t| TagRow {
                        key: t.key,
                        value: t.value,
                        inherit: t.inherit,
                        source: t.source,
                    })
                    .collect(),
                revision: r.header.revision,
            })
        }
        TagsCmd::Tag(TagCmd::Keys { after, limit }) => {
            let r = client
                .list_tag_keys(after, *limit, ReadOptions::default())
                .await?;
            Output::of(&KeysView {
                keys: r
                    .keys
                    .into_iter()
                    .map(|(key, count)| KeyRow { key, count })
                    .collect(),
                next_after: r.next_after,
                revision: r.header.revision,
            })
        }
        TagsCmd::Find(a) => {
            if a.limit > 10_000 {
                return Err(ClientError::rpc(
                    ErrorCode::InvalidArgument,
                    format!("--limit: {} is above the maximum 10000", a.limit),
                ));
            }
            let mut cursor = a.cursor.clone();
            let mut view = FindView {
                scope: a.scope.clone(),
                expr: a.expr.clone(),
                matches: Vec::new(),
                next_cursor: None,
                plan: String::new(),
                revision: 0,
            };
            loop {
                let r = client
                    .find_by_tags(
                        &a.scope,
                        &a.expr,
                        cursor.as_deref(),
                        a.limit,
                        ReadOptions::default(),
                    )
                    .await?;
                if view.plan.is_empty() {
                    view.plan = r.plan;
                }
                view.revision = r.header.revision;
                view.matches.extend(r.matches.into_iter().map(|m| MatchRow {
                    path: m.path,
                    ino: m.ino,
                    kind: kind_name(m.kind),
                }));
                view.next_cursor = r.next_cursor.clone();
                match r.next_cursor {
                    Some(c) if a.all => cursor = Some(c),
                    _ => break,
                }
            }
            Output::of(&view)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        cmd: TagsCmd,
    }

    #[test]
    fn parses_tag_commands() {
        let t =
            T::try_parse_from(["x", "tag", "set", "/a", "k=v", "e=", "--inherit"]).expect("set");
        match t.cmd {
            TagsCmd::Tag(TagCmd::Set {
                path,
                tags,
                inherit,
            }) => {
                assert_eq!(path, "/a");
                assert_eq!(
                    tags,
                    vec![("k".into(), "v".into()), ("e".into(), String::new())]
                );
                assert!(inherit);
            }
            other => panic!("{other:?}"),
        }
        assert!(T::try_parse_from(["x", "tag", "set", "/a", "novalue"]).is_err());
        assert!(T::try_parse_from(["x", "tag", "set", "/a"]).is_err());
        assert!(T::try_parse_from(["x", "tag", "rm", "/a"]).is_err());
        let t = T::try_parse_from(["x", "find", "/", "--where", "a=1 and b=2"]).expect("find");
        match t.cmd {
            TagsCmd::Find(a) => {
                assert_eq!((a.scope.as_str(), a.expr.as_str()), ("/", "a=1 and b=2"))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            T::try_parse_from(["x", "find", "/"]).is_err(),
            "--where is required"
        );
        assert!(T::try_parse_from(["x", "tag", "get", "/a", "--effective"]).is_ok());
        assert!(T::try_parse_from(["x", "tag", "keys"]).is_ok());
    }
}
