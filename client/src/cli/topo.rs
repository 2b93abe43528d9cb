//! `metactl` topology/location commands: site, silo, instance, locate (topology work). OWNER as named.

use clap::Subcommand;

use super::commands::Output;
use crate::{Client, ClientError};

#[derive(Debug, Clone, Subcommand)]
pub enum TopoCmd {
    /// Placeholder until these commands land.
    #[command(name = "__topo_placeholder", hide = true)]
    Placeholder,
}

pub async fn execute(_client: &Client, _cmd: &TopoCmd) -> Result<Output, ClientError> {
    Err(ClientError::rpc(
        crate::ErrorCode::Unimplemented,
        "not implemented yet",
    ))
}
