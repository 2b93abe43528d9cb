//! `metactl`, the operator CLI, as a library module so it can be tested: the clap grammar
//! (`args`), command execution (`commands`), output views (`output`) and tables (`table`).
//! `src/bin/metactl.rs` only calls [`main`].

pub mod args;
pub mod commands;
pub mod importcmd;
pub mod movecmd;
pub mod moveview;
pub mod ns;
pub mod output;
pub mod table;
pub mod tagcmd;
pub mod topo;
pub mod watchcmd;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, OutputFormat, DEFAULT_ENDPOINTS};

/// Entry point of the `metactl` binary: parses the command line (usage errors exit 2), runs
/// the command, prints the result to stdout and errors to stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: INTERNAL: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(cli))
}

/// Runs a parsed command line; returns the process exit status.
pub async fn run(cli: Cli) -> ExitCode {
    match commands::execute(&cli).await {
        Ok(out) => {
            let text = commands::render(&out, cli.output == OutputFormat::Json);
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`metactl ... | head`) is not an error worth reporting.
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            let defaults = crate::endpoint::parse_list(DEFAULT_ENDPOINTS).unwrap_or_default();
            if let Some(h) = commands::hint(&err, &cli, &defaults) {
                eprintln!("hint: {h}");
            }
            ExitCode::from(commands::exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests;
