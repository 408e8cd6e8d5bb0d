//! The server side of the framed data protocol (codec in
//! `strata_rpc::framed`), for any role that serves bulk bytes: the datanode's
//! blobs today, the cachenode's blocks next. A [`FramedHandler`] answers each
//! request with bytes or with a range of a file, which goes from the file to
//! the socket with sendfile(2) (no copy through this process). Ranges sent
//! with drop-behind leave the page cache once the reader has them.
//!
//! [`serve_port`] serves one port for both protocols: each accepted
//! connection's first byte says whether it is framed or HTTP/2 for gRPC.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_common::StrataError;
use strata_common::sys::advise;
use strata_common::telemetry;
use strata_rpc::framed::{
    KIND_CACHE_READ, KIND_PING, KIND_READ, KIND_WRITE, READ_BUFFER, STATUS_ERR, STATUS_OK, encode_error, read_frame,
    write_frame, write_frame_head,
};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

/// Time a reader may take to make room in its socket for more of a range.
const SEND_STALL: Duration = Duration::from_secs(20);
/// Time a new connection has to send its first byte.
const FIRST_BYTE: Duration = Duration::from_secs(10);

/// A range of an open file to send as a frame's payload.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub offset: u64,
    pub length: u64,
}

/// What a request is answered with.
pub enum Reply {
    /// A header and a payload in memory.
    Bytes { header: Vec<u8>, payload: Bytes },
    /// A header and a range of a file; with `drop_behind`, the range leaves
    /// the page cache once the reader has it.
    File { header: Vec<u8>, slice: FileSlice, drop_behind: bool },
}

impl Reply {
    pub fn empty() -> Reply {
        Reply::Bytes { header: Vec::new(), payload: Bytes::new() }
    }
}

/// Answers framed requests of one role. Pings are answered by the server loop.
pub trait FramedHandler: Send + Sync + 'static {
    /// The frame kinds this handler serves.
    fn serves(&self, kind: u8) -> bool {
        matches!(kind, KIND_WRITE | KIND_READ)
    }

    /// Answers one request; an error goes back to the client as an error frame.
    fn handle(
        &self,
        kind: u8,
        header: Vec<u8>,
        payload: Bytes,
    ) -> impl Future<Output = Result<Reply, StrataError>> + Send;
}

/// The metrics label of a frame kind (a fixed set, whatever a peer sends).
fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_PING => "ping",
        KIND_READ => "read",
        KIND_WRITE => "write",
        KIND_CACHE_READ => "cache_read",
        _ => "other",
    }
}

/// Whether a connection's first byte starts a framed request for `handler`.
fn is_framed(handler: &impl FramedHandler, first: u8) -> bool {
    first == KIND_PING || handler.serves(first)
}

/// Serves framed requests on `stream` until the peer closes it.
pub async fn serve_connection<H: FramedHandler>(stream: TcpStream, handler: Arc<H>) {
    let (r, w) = stream.into_split();
    let (mut r, mut w) = (BufReader::with_capacity(READ_BUFFER, r), BufWriter::with_capacity(1 << 20, w));
    let mut behind = DropBehind::default();
    loop {
        let frame = read_frame(&mut r).await;
        behind.expire();
        let (kind, header, payload) = match frame {
            Ok(frame) => frame,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(error = %e, "framed connection ended");
                }
                return;
            }
        };
        let started = Instant::now();
        let received = payload.len() as u64;
        let result = match kind {
            KIND_PING => Ok(Reply::empty()),
            kind if handler.serves(kind) => handler.handle(kind, header, payload).await,
            other => Err(StrataError::invalid(format!("unknown frame kind {other}"))),
        };
        let op = kind_name(kind);
        let sent = match &result {
            Ok(Reply::Bytes { payload, .. }) => payload.len() as u64,
            Ok(Reply::File { slice, .. }) => slice.length,
            Err(_) => 0,
        };
        telemetry::record_bytes("framed", op, received, sent);
        telemetry::record_request("framed", op, telemetry::code_label(&result), started);
        let written = match result {
            Ok(Reply::Bytes { header, payload }) => write_frame(&mut w, STATUS_OK, &header, &payload).await,
            Ok(Reply::File { header, slice, drop_behind }) => {
                let sent = drop_behind.then(|| slice.clone());
                let written = write_file_frame(&mut w, &header, slice).await;
                if let (Some(sent), Ok(())) = (sent, &written) {
                    behind.push(sent);
                }
                written
            }
            Err(e) => write_frame(&mut w, STATUS_ERR, &encode_error(&e), &[]).await,
        };
        if written.is_err() {
            return;
        }
    }
}

/// Serves `handler` over the framed protocol alone on a free loopback port
/// until the runtime ends (tests and tools: no gRPC); answers the address.
pub async fn serve_on_loopback<H: FramedHandler>(handler: Arc<H>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => drop(tokio::spawn(serve_connection(stream, handler.clone()))),
                Err(e) => tracing::warn!(error = %e, "accepting a connection failed"),
            }
        }
    });
    Ok(address)
}

/// Serves `listener` for both protocols: framed connections go to `handler`,
/// the others to the gRPC `router`, until `shutdown` resolves.
pub async fn serve_port<H: FramedHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    router: telemetry::MeteredRouter,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel::<std::io::Result<TcpStream>>(64);
    let acceptor = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // See strata_common::net: gRPC answers must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            let (handler, grpc_tx) = (handler.clone(), grpc_tx.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(FIRST_BYTE, stream.peek(&mut first)).await {
                    Ok(Ok(1)) if is_framed(handler.as_ref(), first[0]) => serve_connection(stream, handler).await,
                    Ok(Ok(1)) => {
                        let _ = grpc_tx.send(Ok(stream)).await;
                    }
                    _ => {}
                }
            });
        }
    });
    let result = router.serve_with_incoming_shutdown(ReceiverStream::new(grpc_rx), shutdown).await;
    acceptor.abort();
    result
}

/// Ranges sent with drop-behind on one connection, dropped from the page
/// cache at the ages in [`DROP_AT`] (looked at when a request arrives) and
/// when the reader leaves. Not at once and more than once: pages the socket
/// still holds are not dropped, and the kernel releases sent buffers some
/// time after the reader has the bytes (a freed buffer goes back to the CPU
/// that made it, whenever that CPU next handles network work).
#[derive(Default)]
struct DropBehind {
    /// (when sent, drops done, range), oldest first.
    sent: VecDeque<(Instant, usize, FileSlice)>,
}

/// Ages at which a range sent with drop-behind is dropped.
pub const DROP_AT: [Duration; 3] = [Duration::from_millis(20), Duration::from_millis(250), Duration::from_secs(2)];
/// Ranges a connection remembers at most (the oldest go first).
const DROP_BEHIND_MAX: usize = 256;

impl DropBehind {
    fn push(&mut self, slice: FileSlice) {
        if self.sent.len() == DROP_BEHIND_MAX {
            self.sent.pop_front();
        }
        self.sent.push_back((Instant::now(), 0, slice));
    }

    fn expire(&mut self) {
        for (sent, drops, slice) in self.sent.iter_mut() {
            if *drops < DROP_AT.len() && sent.elapsed() >= DROP_AT[*drops] {
                drop_pages(slice);
                *drops += 1;
            }
        }
        while self.sent.front().is_some_and(|(_, drops, _)| *drops == DROP_AT.len()) {
            self.sent.pop_front();
        }
    }
}

impl Drop for DropBehind {
    /// The reader left: a last drop of what was not dropped enough yet.
    fn drop(&mut self) {
        for (_, drops, slice) in &self.sent {
            if *drops < DROP_AT.len() {
                drop_pages(slice);
            }
        }
    }
}

fn drop_pages(slice: &FileSlice) {
    advise(&slice.file, slice.offset, slice.length, libc::POSIX_FADV_DONTNEED);
}

/// A frame whose payload is a range of a file, sent by the kernel.
async fn write_file_frame(w: &mut BufWriter<OwnedWriteHalf>, header: &[u8], slice: FileSlice) -> std::io::Result<()> {
    let length = u32::try_from(slice.length)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a file range over 4 GiB in one frame"))?;
    write_frame_head(w, STATUS_OK, header, length).await?;
    w.flush().await?;
    // A blocking thread waits for the disk; it sends on its own descriptor
    // of the socket, so the socket outlives it whatever happens here.
    let socket = w.get_ref().as_ref().as_fd().try_clone_to_owned()?;
    tokio::task::spawn_blocking(move || send_file(&socket, &slice.file, slice.offset, slice.length))
        .await
        .map_err(std::io::Error::other)?
}

/// sendfile(2) of `length` bytes of `file` from `offset` to the (non-blocking) `socket`.
fn send_file(socket: &OwnedFd, file: &File, mut offset: u64, mut length: u64) -> std::io::Result<()> {
    // The whole range in one disk request: sendfile alone reads 64 KiB at a time.
    advise(file, offset, length, libc::POSIX_FADV_WILLNEED);
    while length > 0 {
        let mut at = offset as libc::off_t;
        // SAFETY: both descriptors are open for the call; `at` is a valid offset cell.
        let n = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut at, length as usize) };
        if n > 0 {
            offset += n as u64;
            length -= n as u64;
            continue;
        }
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file ended early"));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => wait_writable(socket)?,
            _ => return Err(e),
        }
    }
    Ok(())
}

fn wait_writable(socket: &OwnedFd) -> std::io::Result<()> {
    let mut poll = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut poll, 1, SEND_STALL.as_millis() as i32) };
    match rc {
        0 => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the reader stopped taking data")),
        rc if rc < 0 => {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted { Ok(()) } else { Err(e) }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use strata_common::ErrorCode;
    use strata_rpc::framed::FramedConn;

    use super::*;

    const KIND_ECHO: u8 = 9;

    /// A handler of another role: echoes payloads, sends files, refuses the rest.
    struct Echo {
        file: Arc<File>,
    }

    impl FramedHandler for Echo {
        fn serves(&self, kind: u8) -> bool {
            kind == KIND_ECHO || kind == KIND_READ
        }

        async fn handle(&self, kind: u8, header: Vec<u8>, payload: Bytes) -> Result<Reply, StrataError> {
            match (kind, header.as_slice()) {
                (KIND_ECHO, b"fail") => Err(StrataError::new(ErrorCode::NotFound, "no such thing")),
                (KIND_ECHO, _) => Ok(Reply::Bytes { header, payload }),
                _ => Ok(Reply::File {
                    header: Vec::new(),
                    slice: FileSlice { file: self.file.clone(), offset: 2, length: 5 },
                    drop_behind: true,
                }),
            }
        }
    }

    #[tokio::test]
    async fn any_handler_is_served_with_pings_errors_and_file_ranges() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let address = serve_on_loopback(Arc::new(Echo { file: Arc::new(file) })).await.unwrap();
        let mut conn = FramedConn::connect(&address).await.unwrap();
        let (header, payload) = conn.request(KIND_ECHO, b"h", b"payload").await.unwrap();
        assert_eq!((header.as_slice(), payload.as_ref()), (&b"h"[..], &b"payload"[..]));
        let (_, payload) = conn.request(KIND_READ, b"", b"").await.unwrap();
        assert_eq!(payload.as_ref(), b"23456", "a file range arrives as the payload");
        let (header, payload) = conn.request(KIND_PING, b"", b"").await.unwrap();
        assert!(header.is_empty() && payload.is_empty());
        let err = conn.request(KIND_ECHO, b"fail", b"").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound, "the handler's error code reaches the client");
        let err = conn.request(KIND_WRITE, b"", b"").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "a kind the handler does not serve is refused");
    }
}
