//! The dashboard's listener: at most [`MAX_CONNECTIONS`] connections at once. A connection past
//! them is closed on arrival, so idle or half-open clients cannot pile up tasks and sockets in
//! the agent while it measures; the run never waits on them either way.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections open at once (a page needs two or three: the page, its event stream, a stop).
pub const MAX_CONNECTIONS: usize = 64;

/// A TCP listener that holds a slot for each connection it hands out.
#[derive(Debug)]
pub(super) struct Capped {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl Capped {
    pub(super) fn new(inner: TcpListener) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

impl Listener for Capped {
    type Io = Slotted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = Listener::accept(&mut self.inner).await;
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return (Slotted { io, _slot: slot }, addr),
                Err(_) => {
                    tracing::debug!(%addr, "dashboard: too many connections; closed");
                    drop(io);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection and its slot, given back when the connection is dropped.
#[derive(Debug)]
pub(super) struct Slotted {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Slotted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_on_arrival() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut capped = Capped::new(l);
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let c = TcpStream::connect(addr).await.expect("connect");
            held.push((c, capped.accept().await));
        }
        // One more: accepted by the kernel, closed by the listener (its read sees the end).
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        let accepting = tokio::spawn(async move { capped.accept().await.1 });
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), extra.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "the extra connection is closed");
        // A slot given back lets the next one in.
        held.pop();
        let next = TcpStream::connect(addr).await.expect("connect");
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(5), accepting)
            .await
            .expect("accepted in time")
            .expect("join");
        assert_eq!(Some(accepted), next.local_addr().ok());
    }
}
