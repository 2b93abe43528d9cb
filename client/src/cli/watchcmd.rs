//! `metactl watch`: follow changes as they are applied, printing one line (or, with `-o json`,
//! one JSON object) per event until interrupted.

use std::io::Write;

use clap::{Args, Subcommand};
use metad_proto::v1::{EventKind, WatchRequest};

use super::commands::Output;
use crate::{Client, ClientError};

#[derive(Debug, Clone, Subcommand)]
pub enum WatchCmd {
    /// Stream changes under a path prefix, from a revision or from now.
    ///
    /// Examples:
    ///   metactl watch                       # everything, from now
    ///   metactl watch /ml --from-rev 120    # every change under /ml after revision 120
    ///   metactl watch --kind created --kind deleted -o json
    Watch(WatchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Path prefix (component-wise); default: everything.
    pub prefix: Option<String>,
    /// Deliver events with revision > N (0 = all retained history); default: from now.
    #[arg(long = "from-rev", value_name = "N")]
    pub from_rev: Option<u64>,
    /// Only these kinds (created, deleted, renamed, attr-changed, tags-changed,
    /// content-written, instance-added, instance-changed, instance-removed, site-changed,
    /// silo-changed). Repeatable.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Only events about this silo.
    #[arg(long)]
    pub silo: Option<String>,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Also print progress notifications.
    #[arg(long)]
    pub progress: bool,
}

fn parse_kind(s: &str) -> Result<EventKind, ClientError> {
    let norm = s.trim().to_ascii_uppercase().replace('-', "_");
    EventKind::from_str_name(&format!("EVENT_KIND_{norm}"))
        .filter(|k| *k != EventKind::Unspecified)
        .ok_or_else(|| {
            ClientError::rpc(
                crate::ErrorCode::InvalidArgument,
                format!("--kind: unknown event kind {s:?}"),
            )
        })
}

fn kind_name(k: i32) -> String {
    EventKind::try_from(k)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_else(|_| format!("kind-{k}"))
}

pub async fn execute(client: &Client, cmd: &WatchCmd, json: bool) -> Result<Output, ClientError> {
    let WatchCmd::Watch(a) = cmd;
    let kinds = a
        .kinds
        .iter()
        .map(|k| parse_kind(k).map(|k| k as i32))
        .collect::<Result<_, _>>()?;
    let req = WatchRequest {
        path_prefix: a.prefix.clone().unwrap_or_default(),
        kinds,
        silo: a.silo.clone().unwrap_or_default(),
        after_revision: a.from_rev,
        progress_interval_ms: 0,
    };
    let mut stream = client.watch(req).await?;
    let mut seen = 0u64;
    let mut out = std::io::stdout();
    while let Some(msg) = Client::next_watch_message(&mut stream).await? {
        for e in &msg.events {
            let line = if json {
                serde_json::json!({
                    "revision": e.revision,
                    "kind": kind_name(e.kind),
                    "path": e.path,
                    "old_path": e.old_path,
                    "ino": e.ino,
                    "silo": e.silo,
                    "site": e.site,
                    "detail": e.detail,
                })
                .to_string()
            } else {
                let mut l = format!("{:>8}  {:<16} {}", e.revision, kind_name(e.kind), e.path);
                if !e.old_path.is_empty() {
                    l.push_str(&format!("  (from {})", e.old_path));
                }
                if !e.silo.is_empty() {
                    l.push_str(&format!("  silo={}", e.silo));
                }
                if !e.detail.is_empty() {
                    l.push_str(&format!("  {}", e.detail));
                }
                l
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(Output::empty());
            }
            seen += 1;
            if a.limit.is_some_and(|n| seen >= n) {
                return Ok(Output::empty());
            }
        }
        if a.progress && msg.events.is_empty() {
            let _ = writeln!(
                out,
                "# progress: complete up to revision {}",
                msg.progress_revision
            );
        }
        let _ = out.flush();
    }
    Ok(Output::empty())
}
