//! `metactl` namespace commands: mkdir, touch, ls, stat, mv, rm, ln (namespace work). OWNER as named.

use clap::Subcommand;

use super::commands::Output;
use crate::{Client, ClientError};

#[derive(Debug, Clone, Subcommand)]
pub enum NsCmd {
    /// Placeholder until these commands land.
    #[command(name = "__ns_placeholder", hide = true)]
    Placeholder,
}

pub async fn execute(_client: &Client, _cmd: &NsCmd) -> Result<Output, ClientError> {
    Err(ClientError::rpc(
        crate::ErrorCode::Unimplemented,
        "not implemented yet",
    ))
}
