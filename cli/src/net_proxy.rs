//! An emulated network for `strata dev --net-delay-ms/--net-rate`: a TCP
//! proxy in front of each datanode that holds every chunk of bytes for half
//! the round trip in each direction and, with a rate, sends them no faster
//! than the link would. This kernel has no `netem` qdisc, so the delay is
//! done here. The link's rate is shared by all connections to the node (one
//! link per direction); the delay queue is bounded, so a fast sender is
//! slowed down the way a full link slows it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// What the emulated link does to the bytes crossing it.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Added in each direction (half the round trip).
    pub one_way: Duration,
    /// Bytes per second of each direction of the link; None for no limit.
    pub rate: Option<u64>,
}

/// Bytes read at once from a socket; also the unit the rate is paced by.
const CHUNK: usize = 64 << 10;
/// Chunks waiting out their delay per connection and direction.
const QUEUE: usize = 512;

/// When the link is next free to send, per direction.
#[derive(Default)]
struct Link {
    free_at: Mutex<Option<Instant>>,
}

impl Link {
    /// Waits for the link to carry `len` bytes at `rate`.
    async fn carry(&self, len: usize, rate: u64) {
        let send_at = {
            let mut free_at = self.free_at.lock().await;
            let start = free_at.map_or_else(Instant::now, |f| f.max(Instant::now()));
            let done = start + Duration::from_secs_f64(len as f64 / rate as f64);
            *free_at = Some(done);
            done
        };
        tokio::time::sleep_until(send_at).await;
    }
}

/// Serves the proxy on `listener`, forwarding to `upstream`, until the task is dropped.
pub async fn serve(listener: TcpListener, upstream: String, shape: Shape) {
    let links = (Arc::new(Link::default()), Arc::new(Link::default()));
    loop {
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the network proxy could not accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let upstream = upstream.clone();
        let links = links.clone();
        tokio::spawn(async move {
            let server = match TcpStream::connect(&upstream).await {
                Ok(server) => server,
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "the proxied node does not answer");
                    return;
                }
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                pipe(client_read, server_write, shape, links.0),
                pipe(server_read, client_write, shape, links.1)
            );
        });
    }
}

/// Moves bytes one way: read as they come, each chunk released after the delay and paced by the rate.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shape: Shape, link: Arc<Link>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Bytes)>(QUEUE);
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = Instant::now() + shape.one_way;
                    if tx.send((due, Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            if let Some(rate) = shape.rate {
                link.carry(chunk.len(), rate).await;
            }
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        address
    }

    async fn proxy(upstream: String, shape: Shape) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener, upstream, shape));
        address
    }

    #[tokio::test]
    async fn adds_the_round_trip_and_paces_the_rate() {
        let upstream = echo_server().await;
        let shape = Shape { one_way: Duration::from_millis(20), rate: Some(4 << 20) };
        let address = proxy(upstream, shape).await;
        let mut socket = TcpStream::connect(&address).await.unwrap();
        // One small echo: at least the round trip (2 × 20 ms).
        let started = std::time::Instant::now();
        socket.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        socket.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ping");
        assert!(started.elapsed() >= Duration::from_millis(40), "{:?}", started.elapsed());
        // 2 MiB at 4 MiB/s each way: at least half a second, and every byte intact.
        let data: Vec<u8> = (0..2u32 << 20).map(|i| (i % 253) as u8).collect();
        let started = std::time::Instant::now();
        let (mut r, mut w) = socket.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move { w.write_all(&sent).await.unwrap() });
        let mut back = vec![0u8; data.len()];
        r.read_exact(&mut back).await.unwrap();
        writer.await.unwrap();
        assert!(back == data);
        assert!(started.elapsed() >= Duration::from_millis(480), "{:?}", started.elapsed());
    }
}
