//! `metactl` move commands: `move` (create moves, optionally `--wait` with a progress bar),
//! `moves ls|get|cancel`, and `agents ls`. Grammar and execution; the output views are in
//! `moveview.rs`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::parse_duration;
use super::commands::Output;
use super::moveview::{
    AgentListView, BatchSummaryView, CreateMoveView, MoveListView, MoveView, SkippedView,
};
use crate::moves::{MoveFilter, MoveSpec};
use crate::{pb, Client, ClientError, ErrorCode, ReadOptions};

/// Paths per CreateMove call (the server's limit).
const PATHS_PER_CALL: usize = 1000;

/// `move --wait` keeps polling through a cluster outage (leader election, a node down) for at
/// most this long.
const WAIT_OUTAGE_MAX: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Subcommand)]
pub enum MoveCmd {
    /// Move (or with --copy, copy) files or directory trees to a silo.
    #[command(long_about = "\
Create moves of files to silo SILO: the silo's agent copies each file's bytes there; with the
default mode (move) every other copy is then retired, with --copy they are kept. Files stay
readable (and writable) during the move. Directories need -r (every file below them).
Files already on the silo, or already moving there, are skipped and listed.

With --wait, a progress bar follows the moves until each is done, failed or cancelled; the
exit status is 1 if any failed.

Example:
    metactl move /ml/imagenet -r --to gpu-nvme --wait
    metactl move /data/a.bin /data/b.bin --to s3-cold --copy --priority 10 --reason backup")]
    Move(MoveArgs),
    /// List, show and cancel moves.
    #[command(subcommand)]
    Moves(MovesCmd),
    /// List the agents serving silos (their leases).
    #[command(subcommand)]
    Agents(AgentsCmd),
}

#[derive(Debug, Clone, Args)]
pub struct MoveArgs {
    /// Absolute namespace paths of files (or directories, with -r).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// The silo to move the files to.
    #[arg(long, value_name = "SILO")]
    pub to: String,
    /// Keep the other copies (default: retire them once the new copy is valid).
    #[arg(long)]
    pub copy: bool,
    /// Move every file below the given directories.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Higher runs first.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub priority: i32,
    /// Who asks (default: user:$USER).
    #[arg(long, value_name = "WHO")]
    pub owner: Option<String>,
    /// Why (free text, at most 256 bytes).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Attempts before a move fails (default: the server's, 5).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_attempts: u32,
    /// Follow the moves with a progress bar until they finish.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how often to poll.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub poll: Duration,
}

#[derive(Debug, Clone, Subcommand)]
pub enum MovesCmd {
    /// List moves (filters combine).
    #[command(long_about = "\
List moves in id order, optionally filtered by batch (the id `metactl move` printed), state,
target silo or owner; --active keeps only unfinished ones. Prints one page (--limit) and the
cursor of the next; --all follows the cursors to the end.

Example:
    metactl moves ls --active
    metactl moves ls --batch 1200 --state failed -o json
    metactl moves ls --silo gpu-nvme --owner reconciler --all")]
    Ls(MovesLsArgs),
    /// Show one move.
    #[command(long_about = "Show one move.\n\nExample:\n    metactl moves get 1234")]
    Get {
        /// Move id.
        id: u64,
    },
    /// Cancel a move that has not committed (its partial copy is cleaned up).
    #[command(
        long_about = "Cancel a move that has not committed yet.\n\nExample:\n    metactl moves cancel 1234 --reason \"wrong target\""
    )]
    Cancel {
        /// Move id.
        id: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct MovesLsArgs {
    /// Only moves of this batch (the id `metactl move` printed).
    #[arg(long, value_name = "ID")]
    pub batch: Option<u64>,
    #[arg(long, value_enum)]
    pub state: Option<MoveStateArg>,
    /// Only moves to this silo.
    #[arg(long, value_name = "SILO")]
    pub silo: Option<String>,
    #[arg(long, value_name = "WHO")]
    pub owner: Option<String>,
    /// Only unfinished moves (pending, claimed, copying, releasing).
    #[arg(long)]
    pub active: bool,
    /// Resume from this cursor.
    #[arg(long, default_value = "")]
    pub cursor: String,
    /// Moves per page (at most 10000).
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Follow cursors to the end.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MoveStateArg {
    Pending,
    Claimed,
    Copying,
    Releasing,
    Done,
    Failed,
    Cancelled,
}

impl MoveStateArg {
    pub fn to_pb(self) -> pb::MoveState {
        match self {
            MoveStateArg::Pending => pb::MoveState::Pending,
            MoveStateArg::Claimed => pb::MoveState::Claimed,
            MoveStateArg::Copying => pb::MoveState::Copying,
            MoveStateArg::Releasing => pb::MoveState::Releasing,
            MoveStateArg::Done => pb::MoveState::Done,
            MoveStateArg::Failed => pb::MoveState::Failed,
            MoveStateArg::Cancelled => pb::MoveState::Cancelled,
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum AgentsCmd {
    /// List live agent leases.
    #[command(
        long_about = "List live agent leases (all silos, or --silo).\n\nExample:\n    metactl agents ls --silo nas1"
    )]
    Ls {
        #[arg(long)]
        silo: Option<String>,
    },
}

/// Runs a move command.
pub async fn execute(client: &Client, cmd: &MoveCmd, json: bool) -> Result<Output, ClientError> {
    match cmd {
        MoveCmd::Move(a) => create(client, a, json).await,
        MoveCmd::Moves(MovesCmd::Ls(a)) => ls(client, a).await,
        MoveCmd::Moves(MovesCmd::Get { id }) => {
            let r = client.get_move(*id, ReadOptions::default()).await?;
            let mv = r
                .r#move
                .ok_or_else(|| ClientError::rpc(ErrorCode::Internal, "answer without a move"))?;
            Output::of(&MoveView::from(mv))
        }
        MoveCmd::Moves(MovesCmd::Cancel { id, reason }) => {
            let r = client.cancel_move(*id, reason).await?;
            let mv = r
                .r#move
                .ok_or_else(|| ClientError::rpc(ErrorCode::Internal, "answer without a move"))?;
            Output::of(&MoveView::from(mv))
        }
        MoveCmd::Agents(AgentsCmd::Ls { silo }) => {
            let r = client
                .list_agents(silo.as_deref().unwrap_or(""), ReadOptions::default())
                .await?;
            Output::of(&AgentListView::from(r.agents))
        }
    }
}

/// The spec `metactl move` flags ask for.
pub fn spec_of(a: &MoveArgs) -> MoveSpec {
    MoveSpec {
        recursive: a.recursive,
        mode: if a.copy {
            pb::MoveMode::Copy
        } else {
            pb::MoveMode::Move
        },
        priority: a.priority,
        owner: a.owner.clone().unwrap_or_else(default_owner),
        reason: a.reason.clone(),
        max_attempts: a.max_attempts,
    }
}

fn default_owner() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("user:{user}")
}

async fn create(client: &Client, a: &MoveArgs, json: bool) -> Result<Output, ClientError> {
    let spec = spec_of(a);
    let mut view = CreateMoveView {
        target_silo: a.to.clone(),
        mode: if a.copy { "copy" } else { "move" },
        batches: Vec::new(),
        moves: 0,
        skipped: Vec::new(),
        summary: None,
    };
    for chunk in a.paths.chunks(PATHS_PER_CALL) {
        let r = client
            .create_move(chunk.to_vec(), &a.to, spec.clone())
            .await?;
        if r.batch != 0 {
            view.batches.push(r.batch);
        }
        view.moves += r.move_ids.len() as u64;
        view.skipped
            .extend(r.skipped.into_iter().map(|s| SkippedView {
                path: s.path,
                reason: s.reason,
            }));
    }
    if !a.wait || view.batches.is_empty() {
        return Output::of(&view);
    }
    let summary = wait(client, &view.batches, a.poll, !json).await?;
    let failed = summary.failed;
    view.summary = Some(summary);
    let out = Output::of(&view)?;
    if failed == 0 {
        return Ok(out);
    }
    // Print the summary, then fail the command.
    let text = super::commands::render(&out, json);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    Err(ClientError::rpc(
        ErrorCode::FailedPrecondition,
        format!(
            "{failed} of {} moves failed (see `metactl moves ls --state failed --batch ID`)",
            view.moves
        ),
    ))
}

/// Sums the batches' counters.
fn total(batches: &[pb::MoveBatch]) -> pb::MoveBatch {
    let mut t = pb::MoveBatch::default();
    for b in batches {
        t.count += b.count;
        t.bytes_total += b.bytes_total;
        t.bytes_done += b.bytes_done;
        t.pending += b.pending;
        t.claimed += b.claimed;
        t.copying += b.copying;
        t.releasing += b.releasing;
        t.done += b.done;
        t.failed += b.failed;
        t.cancelled += b.cancelled;
    }
    t
}

/// Whether every move of the batch is finished.
pub fn finished(b: &pb::MoveBatch) -> bool {
    b.pending + b.claimed + b.copying + b.releasing == 0
}

/// Polls the batches until every move is finished, showing a progress bar on stderr (a
/// terminal only). Returns the final counts, with the failed moves' reasons.
async fn wait(
    client: &Client,
    batches: &[u64],
    poll: Duration,
    bar: bool,
) -> Result<BatchSummaryView, ClientError> {
    let started = tokio::time::Instant::now();
    let pb_files = if bar {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb_files.set_style(style);
    let mut failing_since: Option<tokio::time::Instant> = None;
    let t = loop {
        let got = match poll_batches(client, batches).await {
            Ok(g) => {
                failing_since = None;
                g
            }
            // A leader change or a node down: keep following, within a bound.
            Err(e) if e.is_retryable() => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > WAIT_OUTAGE_MAX {
                    pb_files.abandon();
                    return Err(e);
                }
                pb_files.set_message(format!("cluster not answering ({}); retrying", e.code()));
                tokio::time::sleep(poll).await;
                continue;
            }
            Err(e) => {
                pb_files.abandon();
                return Err(e);
            }
        };
        let t = total(&got);
        pb_files.set_length(t.count);
        pb_files.set_position(t.done + t.failed + t.cancelled);
        pb_files.set_message(format!(
            "{} / {}  (pending {}, copying {}, releasing {}, failed {})",
            super::topo::human_bytes(t.bytes_done),
            super::topo::human_bytes(t.bytes_total),
            t.pending,
            t.claimed + t.copying,
            t.releasing,
            t.failed
        ));
        if finished(&t) {
            break t;
        }
        tokio::time::sleep(poll).await;
    };
    pb_files.finish_and_clear();
    let mut failures = Vec::new();
    if t.failed > 0 {
        for b in batches {
            let filter = MoveFilter {
                batch: *b,
                state: Some(pb::MoveState::Failed),
                ..Default::default()
            };
            let r = client
                .list_moves(filter, "", 20, ReadOptions::default())
                .await?;
            failures.extend(r.moves.into_iter().map(MoveView::from));
            if failures.len() >= 20 {
                break;
            }
        }
    }
    Ok(BatchSummaryView {
        files: t.count,
        done: t.done,
        failed: t.failed,
        cancelled: t.cancelled,
        bytes_total: t.bytes_total,
        bytes_done: t.bytes_done,
        elapsed_ms: started.elapsed().as_millis() as u64,
        failures,
    })
}

async fn poll_batches(client: &Client, batches: &[u64]) -> Result<Vec<pb::MoveBatch>, ClientError> {
    let mut got = Vec::with_capacity(batches.len());
    for b in batches {
        let r = client.get_move_batch(*b, ReadOptions::default()).await?;
        got.push(r.batch.unwrap_or_default());
    }
    Ok(got)
}

async fn ls(client: &Client, a: &MovesLsArgs) -> Result<Output, ClientError> {
    let filter = MoveFilter {
        batch: a.batch.unwrap_or(0),
        state: a.state.map(MoveStateArg::to_pb),
        target_silo: a.silo.clone().unwrap_or_default(),
        owner: a.owner.clone().unwrap_or_default(),
        active_only: a.active,
    };
    let mut cursor = a.cursor.clone();
    let mut moves = Vec::new();
    loop {
        let r = client
            .list_moves(filter.clone(), &cursor, a.limit, ReadOptions::default())
            .await?;
        moves.extend(r.moves.into_iter().map(MoveView::from));
        cursor = r.next_cursor;
        if !a.all || cursor.is_empty() {
            break;
        }
    }
    Output::of(&MoveListView {
        moves,
        next_cursor: cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command, OutputFormat};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("metactl").chain(args.iter().copied()))
    }

    #[test]
    fn move_grammar() {
        let cli = parse(&[
            "move",
            "/a",
            "/b",
            "--to",
            "nvme",
            "-r",
            "--copy",
            "--priority",
            "-5",
            "--owner",
            "ext:x",
            "--reason",
            "why",
            "--wait",
            "--poll",
            "100ms",
        ])
        .expect("parse");
        let Command::Move(MoveCmd::Move(a)) = cli.command else {
            panic!("not a move: {:?}", cli.command)
        };
        assert_eq!(a.paths, ["/a", "/b"]);
        assert_eq!(a.to, "nvme");
        assert!(a.recursive && a.copy && a.wait);
        assert_eq!(a.poll, Duration::from_millis(100));
        let spec = spec_of(&a);
        assert_eq!(spec.mode, pb::MoveMode::Copy);
        assert_eq!(spec.priority, -5);
        assert_eq!(spec.owner, "ext:x");
        assert!(spec.recursive);

        let cli = parse(&["move", "/a", "--to", "s"]).expect("parse");
        let Command::Move(MoveCmd::Move(a)) = cli.command else {
            panic!("not a move")
        };
        let spec = spec_of(&a);
        assert_eq!(spec.mode, pb::MoveMode::Move, "move is the default mode");
        assert!(spec.owner.starts_with("user:"));
        assert!(!a.wait);

        assert!(parse(&["move", "/a"]).is_err(), "--to is required");
        assert!(parse(&["move", "--to", "s"]).is_err(), "a path is required");
    }

    #[test]
    fn moves_and_agents_grammar() {
        let cli = parse(&[
            "moves", "ls", "--state", "failed", "--batch", "3", "--active", "--silo", "s", "-o",
            "json",
        ])
        .expect("parse");
        assert_eq!(cli.output, OutputFormat::Json);
        let Command::Move(MoveCmd::Moves(MovesCmd::Ls(a))) = cli.command else {
            panic!("not moves ls")
        };
        assert_eq!(a.state, Some(MoveStateArg::Failed));
        assert_eq!(
            a.state.map(MoveStateArg::to_pb),
            Some(pb::MoveState::Failed)
        );
        assert_eq!((a.batch, a.active), (Some(3), true));
        assert!(matches!(
            parse(&["moves", "get", "9"]).expect("parse").command,
            Command::Move(MoveCmd::Moves(MovesCmd::Get { id: 9 }))
        ));
        let cli = parse(&["moves", "cancel", "9", "--reason", "oops"]).expect("parse");
        assert!(matches!(
            cli.command,
            Command::Move(MoveCmd::Moves(MovesCmd::Cancel { id: 9, ref reason })) if reason == "oops"
        ));
        let cli = parse(&["agents", "ls", "--silo", "nas1"]).expect("parse");
        assert!(matches!(
            cli.command,
            Command::Move(MoveCmd::Agents(AgentsCmd::Ls { silo: Some(ref s) })) if s == "nas1"
        ));
        assert!(parse(&["moves", "ls", "--state", "bogus"]).is_err());
    }

    #[test]
    fn totals_and_finish() {
        let a = pb::MoveBatch {
            count: 3,
            done: 2,
            pending: 1,
            bytes_total: 30,
            bytes_done: 20,
            ..Default::default()
        };
        let b = pb::MoveBatch {
            count: 2,
            failed: 1,
            cancelled: 1,
            bytes_total: 5,
            ..Default::default()
        };
        let t = total(&[a, b.clone()]);
        assert_eq!((t.count, t.done, t.failed, t.cancelled), (5, 2, 1, 1));
        assert_eq!((t.bytes_total, t.bytes_done), (35, 20));
        assert!(!finished(&t));
        assert!(finished(&b));
    }
}
