//! Runs a parsed `metactl` command against the cluster and turns the reply into an [`Output`]
//! (both its JSON and its table form); also the CLI's client settings.

use std::time::Duration;

use crate::cli::args::{Cli, ClusterCmd, Command, DebugCmd, MemberCmd, RegisterCmd};
use crate::cli::output::{
    ClusterStatusView, MemberChangeView, MemberListView, NodeStatusView, RegisterView, View,
};
use crate::{Client, ClientConfig, ClientError, ReadOptions};

/// Retries after the first attempt for one `metactl` command (the `--timeout` bounds it too);
/// small, so that a down cluster is reported within a few seconds.
const CLI_MAX_RETRIES: u32 = 6;

/// What a command prints, in both formats.
#[derive(Debug)]
pub struct Output {
    pub json: serde_json::Value,
    pub table: String,
}

impl Output {
    /// Nothing left to print (streaming commands print as they go).
    pub(crate) fn empty() -> Output {
        Output {
            json: serde_json::Value::Null,
            table: String::new(),
        }
    }

    pub(crate) fn of<V: View>(view: &V) -> Result<Output, ClientError> {
        let json = serde_json::to_value(view)
            .map_err(|e| ClientError::rpc(crate::ErrorCode::Internal, format!("json: {e}")))?;
        Ok(Output {
            json,
            table: view.table(),
        })
    }
}

/// Shortest wait of `member add-learner --wait`: a little more than the leader's own limit
/// (12 request timeouts, 120 s by default), so its answer arrives rather than a client timeout.
pub const ADD_LEARNER_WAIT_MIN: Duration = Duration::from_secs(130);

/// The client settings a `metactl` invocation uses.
pub fn client_config(cli: &Cli) -> ClientConfig {
    let mut cfg = ClientConfig::new(cli.endpoints.0.clone());
    cfg.total_timeout = cli.timeout;
    cfg.request_timeout = cli.timeout.min(Duration::from_secs(5));
    if let Command::Member(MemberCmd::AddLearner(a)) = &cli.command {
        if a.wait {
            // One attempt lasts until the learner has caught up: a snapshot transfer.
            cfg.total_timeout = cfg.total_timeout.max(ADD_LEARNER_WAIT_MIN);
        }
    }
    cfg.max_retries = CLI_MAX_RETRIES;
    cfg
}

/// Runs `cli.command`.
pub async fn execute(cli: &Cli) -> Result<Output, ClientError> {
    let client = Client::connect(client_config(cli)).await?;
    match &cli.command {
        Command::Cluster(ClusterCmd::Status) => {
            Output::of(&ClusterStatusView::from(client.cluster_status().await?))
        }
        Command::Cluster(ClusterCmd::NodeStatus) => Output::of(&NodeStatusView::from(
            client.on_endpoint(0)?.node_status().await?,
        )),
        Command::Member(cmd) => member(&client, cmd).await,
        Command::Debug(DebugCmd::Register(cmd)) => register(&client, cmd).await,
        Command::Ns(cmd) => super::ns::execute(&client, cmd).await,
        Command::Tags(cmd) => super::tagcmd::execute(&client, cmd).await,
        Command::Topo(cmd) => super::topo::execute(&client, cmd).await,
        Command::Watch(cmd) => {
            super::watchcmd::execute(&client, cmd, cli.output == super::OutputFormat::Json).await
        }
        Command::Move(cmd) => {
            super::movecmd::execute(&client, cmd, cli.output == super::OutputFormat::Json).await
        }
        Command::Import(cmd) => {
            super::importcmd::execute(&client, cmd, cli.output == super::OutputFormat::Json).await
        }
    }
}

async fn member(client: &Client, cmd: &MemberCmd) -> Result<Output, ClientError> {
    match cmd {
        MemberCmd::List => Output::of(&MemberListView::from(client.member_list().await?)),
        MemberCmd::AddLearner(a) => {
            let r = client
                .add_learner(a.id, &a.site, &a.peer_addr, &a.client_addr, a.wait)
                .await?;
            let action = if a.wait {
                format!("added learner {} (caught up)", a.id)
            } else {
                format!("added learner {}", a.id)
            };
            Output::of(&MemberChangeView::new(action, r))
        }
        MemberCmd::Promote { id } => {
            let r = client.promote_learner(*id).await?;
            Output::of(&MemberChangeView::new(format!("promoted {id} to voter"), r))
        }
        MemberCmd::Remove { id } => {
            let r = client.remove_member(*id).await?;
            Output::of(&MemberChangeView::new(format!("removed member {id}"), r))
        }
    }
}

async fn register(client: &Client, cmd: &RegisterCmd) -> Result<Output, ClientError> {
    match cmd {
        RegisterCmd::Put { key, value } => {
            let r = client.register_put(key, value.as_bytes().to_vec()).await?;
            Output::of(&RegisterView::put(key.clone(), value.clone(), r))
        }
        RegisterCmd::Incr { key, delta } => {
            let r = client.register_incr(key, *delta).await?;
            Output::of(&RegisterView::incr(key.clone(), r))
        }
        RegisterCmd::Get {
            key,
            serializable,
            min_revision,
            node,
        } => {
            let opts = if *serializable {
                ReadOptions::serializable()
            } else {
                ReadOptions::linearizable()
            }
            .min_revision(*min_revision);
            let target = match node {
                Some(i) => client.on_endpoint(*i)?,
                None => client.clone(),
            };
            let r = target.register_get(key, opts).await?;
            Output::of(&RegisterView::get(key.clone(), r))
        }
    }
}

/// A line of advice to print under an error, if there is one.
pub fn hint(err: &ClientError, cli: &Cli, default_endpoints: &[String]) -> Option<String> {
    use crate::ErrorCode as C;
    match err {
        ClientError::Transport { .. } if cli.endpoints.0 == default_endpoints => Some(
            "is `metad dev` running? By default metactl talks to 127.0.0.1:7001-7003; use \
             --endpoints (or METAD_ENDPOINTS) for another cluster"
                .into(),
        ),
        ClientError::Transport { .. } => Some(format!(
            "no node answered at {}; are they up, and are these their client addresses?",
            cli.endpoints.0.join(",")
        )),
        ClientError::Ambiguous { .. } => Some(
            "the change may or may not have been applied; check with `metactl member list` \
             before retrying"
                .into(),
        ),
        ClientError::Rpc {
            code: C::Unavailable | C::NotLeader,
            ..
        } => Some(
            "the cluster has no leader right now (election, or no quorum); see \
             `metactl cluster status`"
                .into(),
        ),
        ClientError::Rpc {
            code: C::Timeout, ..
        } => Some("raise --timeout, or see `metactl cluster status`".into()),
        _ => None,
    }
}

/// Exit status for an error: 2 for a usage / invalid-argument error, 1 otherwise.
pub fn exit_code(err: &ClientError) -> u8 {
    match err.code() {
        crate::ErrorCode::InvalidArgument => 2,
        _ => 1,
    }
}

/// Renders `out` in the requested format (JSON: one object, pretty-printed).
pub fn render(out: &Output, json: bool) -> String {
    if json && out.json.is_null() {
        String::new()
    } else if json {
        let mut s = serde_json::to_string_pretty(&out.json).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    } else {
        out.table.clone()
    }
}
