//! Background writeback of `sm.redb`. State-machine commits skip the fsync and one durable
//! commit follows at most every `DURABLE_EVERY`; without help, that commit's fsync writes out
//! everything dirtied since the last one, on the apply path (13 ms p50 with 128 writing
//! clients — apply, and so every write, stalled that long). This thread `fdatasync`s the file
//! from its own descriptor every [`WRITEBACK_EVERY`] while there are unflushed commits, so the
//! durable commit finds little left to write. It takes no redb lock and changes no data: it
//! only makes the kernel write pages earlier than it would have anyway. When a streamed
//! snapshot install replaces `sm.redb` (the store bumps its generation), it reopens the path.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

/// How often dirty pages of `sm.redb` are pushed to disk in the background.
pub const WRITEBACK_EVERY: Duration = Duration::from_millis(50);

/// Starts the writeback thread for the file at `path`. `dirty` is the store's "commits since
/// the last durable one" flag and `generation` counts replacements of the file; the thread
/// ends once the store (their owner) is gone.
pub fn spawn(
    path: &Path,
    dirty: Weak<AtomicBool>,
    generation: Weak<AtomicU64>,
) -> std::io::Result<()> {
    let path = path.to_path_buf();
    let mut file = File::open(&path)?;
    let mut seen = 0;
    std::thread::Builder::new()
        .name("metad-sm-writeback".into())
        .spawn(move || loop {
            // A periodic task, not a wait for an event: the interval is the point.
            std::thread::sleep(WRITEBACK_EVERY);
            let (Some(flag), Some(generation)) = (dirty.upgrade(), generation.upgrade()) else {
                break;
            };
            let needed = flag.load(Ordering::Relaxed);
            let now = generation.load(Ordering::SeqCst);
            drop((flag, generation));
            if now != seen {
                match File::open(&path) {
                    Ok(f) => {
                        file = f;
                        seen = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "reopening sm.redb for writeback failed"),
                }
            }
            if needed {
                if let Err(e) = file.sync_data() {
                    tracing::warn!(error = %e, "background writeback of sm.redb failed");
                }
            }
        })?;
    Ok(())
}
