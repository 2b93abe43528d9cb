//! The userspace peer proxy: every Raft connection to node *i* goes through proxy *i*, which
//! adds WAN latency and jitter on demand (the kernel here has no netem). Each direction of a
//! connection is forwarded chunk by chunk; a chunk is held until `delay ± jitter` after it
//! was read, and chunks keep their order. Lives in the harness process, in the root network
//! namespace; it must not decide partitions (those are iptables rules in the namespaces).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Delay settings shared by every connection of one proxy.
#[derive(Debug, Default)]
pub struct Latency {
    delay_us: AtomicU64,
    jitter_us: AtomicU64,
}

impl Latency {
    pub fn set(&self, delay: Duration, jitter: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        self.jitter_us
            .store(jitter.as_micros() as u64, Ordering::Relaxed);
    }

    fn sample(&self) -> Duration {
        let d = self.delay_us.load(Ordering::Relaxed);
        let j = self.jitter_us.load(Ordering::Relaxed);
        if d == 0 && j == 0 {
            return Duration::ZERO;
        }
        let jitter = if j == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=2 * j) as i64 - j as i64
        };
        Duration::from_micros((d as i64 + jitter).max(0) as u64)
    }
}

/// A running proxy.
pub struct Proxy {
    pub listen: SocketAddr,
    pub latency: Arc<Latency>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `bind` (port 0 for any) and forwards every connection to `target`.
    pub async fn start(bind: SocketAddr, target: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind(bind).await?;
        let listen = listener.local_addr()?;
        let latency = Arc::new(Latency::default());
        let lat = Arc::clone(&latency);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let lat = Arc::clone(&lat);
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        pipe_both(inbound, outbound, lat).await;
                    }
                });
            }
        });
        Ok(Proxy {
            listen,
            latency,
            task,
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe_both(a: TcpStream, b: TcpStream, lat: Arc<Latency>) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let one = tokio::spawn(pipe(ar, bw, Arc::clone(&lat)));
    let two = tokio::spawn(pipe(br, aw, lat));
    let _ = tokio::join!(one, two);
}

/// Copies `from` to `to`, holding each chunk until its due time. A reader task and a writer
/// task so that reading continues while earlier chunks wait.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    lat: Arc<Latency>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last_due = Instant::now();
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Never schedule a chunk before the previous one: TCP keeps order.
                    let due = (Instant::now() + lat.sample()).max(last_due);
                    last_due = due;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_both_ways_and_adds_the_configured_delay() -> anyhow::Result<()> {
        let echo = TcpListener::bind("127.0.0.1:0").await?;
        let echo_addr = echo.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start("127.0.0.1:0".parse()?, echo_addr).await?;
        let mut c = TcpStream::connect(proxy.listen).await?;
        let mut buf = [0u8; 5];
        c.write_all(b"hello").await?;
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"hello");

        proxy.latency.set(Duration::from_millis(40), Duration::ZERO);
        let t = std::time::Instant::now();
        c.write_all(b"again").await?;
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"again");
        // One delay each way.
        assert!(
            t.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t.elapsed()
        );
        Ok(())
    }
}
