//! The TCP listener of the API (`--listen`), bounded against clients that
//! never authenticate: the bearer token is checked only once a request
//! head has arrived, and axum's own server sets no timer, so hyper's
//! header-read timeout never applied: a client that opened connections
//! and sent nothing, or half a request head a byte at a time, held each
//! one forever, until the process ran out of file descriptors and the
//! Unix socket, the state file and the dataplane link failed with it
//! (found by review).
//!
//! [`serve`] takes at most `max` connections at once (the next waits in
//! the kernel's backlog until one closes) and serves each with hyper's
//! HTTP/1 server and a timer: a request head (the first, or the next on a
//! kept-alive connection) must arrive whole within `head_timeout` of the
//! server starting to wait for it, however it trickles in; an answer may
//! wait `write_timeout` at most for the client to take any of it
//! ([`WriteDeadline`]: a client that sent many requests and reads none).
//! The time the server takes to answer (a change may wait for the one
//! before; bodies have their own timeout in the API) is not limited here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// TCP connections the API serves at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long an answer may wait for the client to take any of it: a client
/// that sent many requests and reads none holds its connection no longer
/// (found by review: the head timeout is stopped while an answer waits).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request head may take to arrive (idle kept-alive
/// connections are closed after it too: clients reconnect).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` turns true, then lets the
/// requests in progress finish (no new ones on kept-alive connections).
pub async fn serve(listener: TcpListener, router: Router, max: usize, (head_timeout, write_timeout): (Duration, Duration), stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let mut conns = JoinSet::new();
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    loop {
        // A slot first: past `max`, connections wait in the backlog.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = stopped(stop.clone()) => break,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                // Out of file descriptors, say: again a little later.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(stop.clone()) => break,
        };
        // Finished connections leave the set as they go.
        while conns.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        conns.spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(head_timeout);
            let conn = http.serve_connection(TokioIo::new(WriteDeadline::new(stream, write_timeout)), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped(stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

/// A stream whose writes fail with `TimedOut` once one has waited
/// `timeout` for the peer to take any bytes (a full send buffer); a write
/// that makes progress starts the wait afresh. Reads, and the time the
/// server takes to answer, are not limited.
pub struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, timeout: Duration) -> WriteDeadline<T> {
        WriteDeadline { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)), armed: false }
    }

    /// The write is Pending: an error once it has been for `timeout` (the
    /// deadline's timer wakes the task for it).
    fn stalled<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if !self.armed {
            self.armed = true;
            let at = Instant::now() + self.timeout;
            self.deadline.as_mut().reset(at);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client takes no answer"))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn done<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => self.stalled(cx),
            r => {
                self.armed = false;
                r
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.done(r, cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.done(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.done(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        s
    }

    fn closed(s: &mut TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 512];
        loop {
            match s.read(&mut b) {
                Ok(0) => return true,
                // A 408 hyper may write first, then the close.
                Ok(_) => continue,
                Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
            }
        }
    }

    /// Two slots, 300 ms for a head: two clients that send nothing (or a
    /// head a byte every 100 ms: a trickle resets nothing) hold both
    /// slots until the head time is up, then are closed and a third is
    /// served; a request that takes the server longer than the head time
    /// is answered; stopping ends the server.
    #[test]
    fn heads_must_arrive_in_time_and_connections_are_bounded() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (addr, server) = rt.block_on(async {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let app = Router::new()
                .route("/", axum::routing::get(|| async { "ok" }))
                .route("/slow", axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "slow"
                }));
            (addr, tokio::spawn(serve(tcp, app, 2, (Duration::from_millis(300), Duration::from_millis(300)), stop_rx)))
        });
        let start = std::time::Instant::now();
        let mut silent = TcpStream::connect(addr).unwrap();
        let mut trickle = TcpStream::connect(addr).unwrap();
        let writer = {
            let mut t = trickle.try_clone().unwrap();
            std::thread::spawn(move || {
                for b in b"GET / HTTP/1.1\r\nHost: x\r\n".iter() {
                    if t.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let mut third = get(addr, "/");
        let mut answer = String::new();
        third.read_to_string(&mut answer).unwrap();
        let waited = start.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
        assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "served after {waited:?}");
        assert!(closed(&mut silent), "the silent one still open");
        assert!(closed(&mut trickle), "the trickling one still open");
        writer.join().unwrap();
        // Longer than the head time, on the server's side: answered.
        let mut slow = get(addr, "/slow");
        let mut answer = String::new();
        slow.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with("slow"), "{answer}");
        stop_tx.send(true).unwrap();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await.expect("stopped").unwrap() });
    }
    /// One slot: a client that sends many requests for large answers and
    /// reads none holds it only until its answer waited the write time,
    /// then the next client is served.
    #[test]
    fn a_client_that_takes_no_answer_is_closed() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let addr = rt.block_on(async {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let app = Router::new()
                .route("/", axum::routing::get(|| async { "ok" }))
                .route("/big", axum::routing::get(|| async { vec![b'x'; 1 << 20] }));
            tokio::spawn(serve(tcp, app, 1, (Duration::from_secs(5), Duration::from_millis(300)), stop_rx));
            addr
        });
        let mut greedy = TcpStream::connect(addr).unwrap();
        for _ in 0..32 {
            greedy.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        let start = std::time::Instant::now();
        let mut next = get(addr, "/");
        let mut answer = String::new();
        next.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with("ok"), "{answer}");
        assert!(start.elapsed() < Duration::from_secs(4), "served after {:?}", start.elapsed());
        drop(greedy);
        rt.shutdown_background();
    }
}
