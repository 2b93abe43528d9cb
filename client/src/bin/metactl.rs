//! `metactl`: the metad operator CLI. Everything lives in `metad_client::cli`.

fn main() -> std::process::ExitCode {
    metad_client::cli::main()
}
