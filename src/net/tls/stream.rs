//! A tokio TCP connection with or without TLS, as one type, for the connecting side of the peer
//! transport and the TCP load generator.
//!
//! Writers must `flush` after each burst: a TLS stream may keep encrypted bytes that the
//! socket could not take yet until it is flushed (a no-op on plain TCP).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One outbound connection, plain or inside TLS.
#[derive(Debug)]
pub enum NetStream {
    Plain(TcpStream),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl NetStream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, NetStream::Plain(_))
    }
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            NetStream::TlsClient(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            NetStream::TlsClient(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            NetStream::TlsClient(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            NetStream::TlsClient(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
