//! The TCP listener of the API (`--listen`), bounded against clients that
//! never authenticate: the bearer token is checked only once a request
//! head has arrived, and axum's own server has no header-read timeout, so
//! a client that opened connections and sent nothing (or half a request
//! head) held each one forever, until the process ran out of file
//! descriptors and the Unix socket, the state file and the dataplane link
//! failed with it (found by review).
//!
//! [`Guarded`] takes at most `max` connections at once (the next waits in
//! the kernel's backlog until one closes) and closes each one after `idle`
//! without a byte read or written ([`IdleTimeout`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// TCP connections the API serves at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A TCP connection with nothing read or written for this long is closed
/// (between requests too: clients reconnect).
pub const IDLE: Duration = Duration::from_secs(30);

/// A TCP listener with a bound on connections and an idle timeout on each.
pub struct Guarded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Guarded {
    pub fn new(inner: TcpListener, max: usize, idle: Duration) -> Guarded {
        Guarded { inner, slots: Arc::new(Semaphore::new(max.max(1))), idle }
    }
}

impl Listener for Guarded {
    type Io = IdleTimeout<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // A slot first: past `max`, connections wait in the backlog.
        let slot = self.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (io, addr) = Listener::accept(&mut self.inner).await;
        (IdleTimeout::new(io, self.idle, slot), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A stream that fails with `TimedOut` once `idle` passed without a byte
/// read or written; holds its listener slot until dropped.
pub struct IdleTimeout<T> {
    inner: T,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, idle: Duration, slot: OwnedSemaphorePermit) -> IdleTimeout<T> {
        IdleTimeout { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)), _slot: slot }
    }

    fn progressed(&mut self) {
        let idle = self.idle;
        self.deadline.as_mut().reset(Instant::now() + idle);
    }

    /// `Pending` from the stream: an error if the deadline passed (the
    /// deadline's timer wakes the task for it).
    fn waiting<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if r.as_ref().is_ok_and(|n| *n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.waiting(cx),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Two slots, 300 ms idle: two clients that send nothing hold both
    /// slots; a third is served only once the idle ones were closed, which
    /// happens after the idle time, not never; a client that keeps talking
    /// is not closed.
    #[test]
    fn idle_connections_are_closed_and_bounded() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let addr = rt.block_on(async {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
            tokio::spawn(async move { axum::serve(Guarded::new(tcp, 2, Duration::from_millis(300)), app).await });
            addr
        });
        let start = std::time::Instant::now();
        let mut silent: Vec<std::net::TcpStream> = (0..2).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        // Half a request head on one of them.
        silent[1].write_all(b"GET / HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut third = std::net::TcpStream::connect(addr).unwrap();
        third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).unwrap();
        let waited = start.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
        assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "served after {waited:?}");
        // The silent ones were closed by the server.
        for s in &mut silent {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 64];
            assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "still open");
        }
        // A client that keeps talking, a request every 100 ms for a second
        // on one connection, is served throughout.
        let mut busy = std::net::TcpStream::connect(addr).unwrap();
        busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for _ in 0..10 {
            busy.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut b = [0u8; 512];
            let n = busy.read(&mut b).unwrap();
            assert!(b[..n].starts_with(b"HTTP/1.1 200"));
            std::thread::sleep(Duration::from_millis(100));
        }
        rt.shutdown_background();
    }
}
