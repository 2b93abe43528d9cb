//! `metad-agent`: the reference posix agent. Everything lives in `metad_client::agent::cmd`.

fn main() -> std::process::ExitCode {
    metad_client::agent::cmd::main()
}
