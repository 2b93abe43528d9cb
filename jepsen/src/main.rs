//! `metad-jepsen`: see `jepsen/README.md`.

fn main() {
    eprintln!("metad-jepsen: not implemented yet");
    std::process::exit(2);
}
