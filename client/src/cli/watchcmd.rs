//! `metactl` the watch command (watch work). OWNER as named.

use clap::Subcommand;

use super::commands::Output;
use crate::{Client, ClientError};

#[derive(Debug, Clone, Subcommand)]
pub enum WatchCmd {
    /// Placeholder until these commands land.
    #[command(name = "__watchcmd_placeholder", hide = true)]
    Placeholder,
}

pub async fn execute(_client: &Client, _cmd: &WatchCmd) -> Result<Output, ClientError> {
    Err(ClientError::rpc(
        crate::ErrorCode::Unimplemented,
        "not implemented yet",
    ))
}
