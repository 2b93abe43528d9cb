//! `metad-bench`: see docs/benchmarks.md.

fn main() {
    eprintln!("metad-bench: not implemented yet");
    std::process::exit(2);
}
