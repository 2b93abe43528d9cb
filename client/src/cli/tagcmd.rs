//! `metactl` tag commands: tag set|rm|get|keys, find (tags work). OWNER as named.

use clap::Subcommand;

use super::commands::Output;
use crate::{Client, ClientError};

#[derive(Debug, Clone, Subcommand)]
pub enum TagsCmd {
    /// Placeholder until these commands land.
    #[command(name = "__tagcmd_placeholder", hide = true)]
    Placeholder,
}

pub async fn execute(_client: &Client, _cmd: &TagsCmd) -> Result<Output, ClientError> {
    Err(ClientError::rpc(
        crate::ErrorCode::Unimplemented,
        "not implemented yet",
    ))
}
