//! `metactl` command-line grammar (clap derive): global flags, every command and its help text.
//! Parsing only; running the commands is in `commands.rs`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The `metad dev` cluster's client addresses: the default for `--endpoints`.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

const LONG_ABOUT: &str = "\
metactl talks to a metad cluster over its gRPC client API: cluster health, membership changes,
and (hidden, for developers) the replicated test register.

By default it talks to the local development cluster started by `metad dev`
(127.0.0.1:7001-7003), so no flags are needed to try it:

    metad dev &
    metactl cluster status

Point it at another cluster with --endpoints or METAD_ENDPOINTS (any subset of the nodes is
enough; the leader is found automatically):

    METAD_ENDPOINTS=10.0.1.5:7001,10.0.2.5:7001 metactl member list -o json

Errors are printed to stderr as `error: CODE: message`. Exit status: 0 ok, 1 failure,
2 usage or invalid argument.";

#[derive(Debug, Clone, Parser)]
#[command(name = "metactl", version, about = "Operate a metad cluster", long_about = LONG_ABOUT)]
pub struct Cli {
    /// Client addresses of cluster nodes, comma-separated (host:port or http://host:port).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "METAD_ENDPOINTS",
        default_value = DEFAULT_ENDPOINTS,
        value_parser = parse_endpoints,
        value_name = "ADDRS"
    )]
    pub endpoints: EndpointList,

    /// Output format.
    #[arg(short = 'o', long, global = true, help_heading = "Global options", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Give up after this long, retries included (e.g. 500ms, 10s, 2m; a bare number is seconds).
    #[arg(long, global = true, help_heading = "Global options", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

/// A parsed, normalised `--endpoints` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointList(pub Vec<String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables.
    Table,
    /// One JSON object per command, for scripts.
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Cluster health: leader, term, each node's state.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// List and change the cluster's members.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Developer tools for testing the replicated core.
    #[command(subcommand, hide = true)]
    Debug(DebugCmd),
    // -- namespace commands (namespace work) --
    #[command(flatten)]
    Ns(super::ns::NsCmd),

    // -- tag commands (tags work) --
    #[command(flatten)]
    Tags(super::tagcmd::TagsCmd),

    // -- topology/location commands (topology work) --
    #[command(flatten)]
    Topo(super::topo::TopoCmd),

    // -- watch command (watch work) --
    #[command(flatten)]
    Watch(super::watchcmd::WatchCmd),

    // -- moves, agents and import (moves work) --
    #[command(flatten)]
    Move(super::movecmd::MoveCmd),
    #[command(flatten)]
    Import(super::importcmd::ImportCmd),
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCmd {
    /// Show the leader, the term and every node's role, state and progress.
    #[command(long_about = "\
Show the leader, the term and every node's role, Raft state, commit/applied index and
state-machine revision. The leader is marked with `*`; nodes that did not answer show why.

Example:
    metactl cluster status
    metactl cluster status -o json")]
    Status,
    /// Show one node's own view (the first --endpoints entry), without asking the others.
    #[command(long_about = "\
Show the view of exactly one node: the first address in --endpoints. Useful to see what a
node that may be cut off from the others believes.

Example:
    metactl --endpoints 127.0.0.1:7002 cluster node-status")]
    NodeStatus,
}

#[derive(Debug, Clone, Subcommand)]
pub enum MemberCmd {
    /// List voters and learners; the leader is marked with `*`.
    #[command(long_about = "\
List the cluster's members (voters and learners) with their site and addresses. The leader is
marked with `*`.

Example:
    metactl member list")]
    List,
    /// Add a new node as a learner (non-voting); it copies the log and catches up.
    #[command(long_about = "\
Add a new node as a learner: it receives the log (or a snapshot) but does not vote. Start the
new metad node first, then add it, wait for it to catch up, then promote it.

Example:
    metactl member add-learner --id 4 --site dc2 \\
        --peer-addr 10.0.2.7:7101 --client-addr 10.0.2.7:7001 --wait
    metactl member promote 4")]
    AddLearner(AddLearnerArgs),
    /// Make a learner a voter.
    #[command(long_about = "\
Make a learner a voting member. Promote only a learner that has caught up (see
`member add-learner --wait`).

Example:
    metactl member promote 4")]
    Promote {
        /// Node id of the learner.
        id: u64,
    },
    /// Remove a voter or learner from the cluster.
    #[command(long_about = "\
Remove a member (voter or learner). Removing voters shrinks the quorum; keep at least three
voters on distinct sites in production.

Example:
    metactl member remove 4")]
    Remove {
        /// Node id of the member to remove.
        id: u64,
    },
}

#[derive(Debug, Clone, Args)]
pub struct AddLearnerArgs {
    /// Node id of the new member (unique in the cluster, > 0).
    #[arg(long)]
    pub id: u64,
    /// Site the node is in.
    #[arg(long)]
    pub site: String,
    /// Address other metad nodes reach it at for Raft traffic (host:port).
    #[arg(long, value_name = "ADDR")]
    pub peer_addr: String,
    /// Address clients reach it at (host:port).
    #[arg(long, value_name = "ADDR")]
    pub client_addr: String,
    /// Return only once the learner has caught up with the leader's log. A large state
    /// arrives as a snapshot (~100 s at 10 M files), so this waits up to the larger of
    /// --timeout and 130 s; the leader itself gives up after 120 s (reported as AMBIGUOUS:
    /// the learner is added and still catching up, see `cluster status`).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DebugCmd {
    /// The INTERNAL replicated test register (not a product API).
    #[command(subcommand)]
    Register(RegisterCmd),
}

#[derive(Debug, Clone, Subcommand)]
pub enum RegisterCmd {
    /// Set KEY to VALUE; prints the previous value and the new revision.
    #[command(
        long_about = "Set KEY to VALUE exactly once.\n\nExample:\n    metactl debug register put greeting hello"
    )]
    Put { key: String, value: String },
    /// Add DELTA (default 1) to the counter KEY; prints the new value.
    #[command(
        long_about = "Add DELTA to counter KEY exactly once.\n\nExample:\n    metactl debug register incr hits 5"
    )]
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Read KEY.
    #[command(long_about = "\
Read KEY (linearizable by default).

Example:
    metactl debug register get greeting
    metactl debug register get greeting --node 2 --serializable --min-revision 40")]
    Get {
        key: String,
        /// Serve from the node's local state (may be stale) instead of linearizably.
        #[arg(long)]
        serializable: bool,
        /// Wait until the serving node has applied at least this revision.
        #[arg(long, default_value_t = 0, value_name = "REV")]
        min_revision: u64,
        /// Ask only this node: a 0-based index into --endpoints.
        #[arg(long, value_name = "INDEX")]
        node: Option<usize>,
    },
}

fn parse_endpoints(s: &str) -> Result<EndpointList, String> {
    crate::endpoint::parse_list(s)
        .map(EndpointList)
        .map_err(|e| e.message())
}

/// Parses `500ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (try 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))?;
    if d.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    Ok(d)
}
