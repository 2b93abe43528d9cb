//! Deliberate bugs for proving that the jepsen checkers can fail. Compiled in only with the
//! `mutations` cargo feature; a normal build (debug or release) has no way to turn them on.
//! Each mutation is named in `METAD_MUTATIONS` (comma-separated) at process start.
//!
//! - `stale-reads`: linearizable reads are served from the local state machine without a
//!   read index, as if they were linearizable.
//! - `skip-token-check`: move commits skip the fencing-token comparison.
//!
//! And two that exist to measure, not to be caught (`store::apply_floor`): they acknowledge
//! tag writes without applying them, to price a write outside the state machine.
//!
//! - `null-apply`: tag commands are answered as applied, and nothing is written.
//! - `one-row-apply`: the same, after writing one 256-byte row per command.

/// Whether mutation `name` is on in this process.
#[cfg(feature = "mutations")]
pub fn on(name: &str) -> bool {
    use std::sync::OnceLock;
    static SET: OnceLock<Vec<String>> = OnceLock::new();
    SET.get_or_init(|| {
        std::env::var("METAD_MUTATIONS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|m| m == name)
}

/// Whether mutation `name` is on in this process: never, without the `mutations` feature.
#[cfg(not(feature = "mutations"))]
#[inline(always)]
pub fn on(_name: &str) -> bool {
    false
}
