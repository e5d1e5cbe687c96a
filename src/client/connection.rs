//! One TCP connection to one server, plain or inside TLS: connect (and finish the TLS
//! handshake) with a timeout, write a request line, read response lines until a deadline.
//! Blocking `std::net` and `rustls::StreamOwned`, no threads.
//!
//! It knows lines, not requests: matching a line to an operation is the caller's job. It must
//! never block past the deadline it is given, nor buffer more than one line's limit however
//! the server behaves.

use crate::net::protocol::{LineDecoder, LineEvent};
use crate::net::tls::ClientTls;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Bytes read from the socket at once. Responses are short; one read usually holds one.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Shortest socket timeout set: a zero timeout means "block forever" to the OS.
const TIMEOUT_MIN: Duration = Duration::from_millis(1);

/// Complete lines queued but not yet taken. A server answers one line per request, so more
/// than this many at once is a server that floods us.
const QUEUED_LINES_MAX: usize = 1_024;

/// Why a connection stopped being usable.
#[derive(Debug)]
pub(crate) enum ConnectionError {
    /// The server closed the connection, or the socket failed. Reconnecting may help.
    Broken(String),
    /// The server broke the line framing (a line over the limit, a flood of lines).
    Protocol(String),
}

/// The response lines read from one connection and not yet taken, with the framing and the
/// flood limit every client applies. Shared by this blocking client and the TCP load
/// generator (`lockstep::loadgen`), which read their sockets differently.
#[derive(Default)]
pub(crate) struct ResponseLines {
    decoder: LineDecoder,
    lines: VecDeque<Vec<u8>>,
}

impl ResponseLines {
    /// Takes bytes read from the socket. `Err` names how the server broke the framing.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        for event in self.decoder.feed(bytes) {
            match event {
                LineEvent::Line(line) => self.lines.push_back(line),
                LineEvent::TooLong | LineEvent::Abandoned => {
                    return Err("the server sent a line over the protocol's 64 KiB limit".into());
                }
            }
        }
        if self.lines.len() > QUEUED_LINES_MAX {
            return Err(format!(
                "the server sent over {QUEUED_LINES_MAX} lines that nobody asked for"
            ));
        }
        Ok(())
    }

    /// The oldest complete line not yet taken.
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.lines.pop_front()
    }
}

/// The socket, plain or inside TLS. Timeouts are set on the TCP socket under either.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &tls.sock,
        }
    }

    /// Writes all of `bytes`; under TLS, flushes the records out too.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.write_all(bytes),
            Stream::Tls(tls) => {
                tls.write_all(bytes)?;
                tls.flush()
            }
        }
    }

    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buffer),
            Stream::Tls(tls) => tls.read(buffer),
        }
    }
}

/// Runs the client side of a TLS handshake on `socket` within `timeout`.
fn handshake(
    tls: &ClientTls,
    address: &str,
    mut socket: TcpStream,
    timeout: Duration,
) -> io::Result<Stream> {
    let name = tls
        .server_name_for(address)
        .map_err(|problem| io::Error::new(io::ErrorKind::InvalidInput, problem))?;
    let mut connection = rustls::ClientConnection::new(std::sync::Arc::clone(tls.config()), name)
        .map_err(|error| io::Error::other(format!("TLS: {error}")))?;
    let deadline = Instant::now() + timeout;
    // Bounded by the deadline: every round blocks at most until it.
    while connection.is_handshaking() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TLS handshake within {timeout:?} (does the server run with TLS?)"),
            ));
        }
        socket.set_read_timeout(Some(remaining.max(TIMEOUT_MIN)))?;
        socket.set_write_timeout(Some(remaining.max(TIMEOUT_MIN)))?;
        match connection.complete_io(&mut socket) {
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(io::Error::new(
                    error.kind(),
                    "the server closed the connection during the TLS handshake",
                ));
            }
            Err(error) => {
                return Err(io::Error::new(
                    error.kind(),
                    format!("TLS handshake failed: {error}"),
                ));
            }
        }
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(
        connection, socket,
    ))))
}

pub(crate) struct Connection {
    stream: Stream,
    lines: ResponseLines,
    read_buffer: Box<[u8]>,
}

impl Connection {
    /// Connects to `address` (`host:port`), trying each address it resolves to, each within
    /// `connect_timeout`; with `tls`, then runs the TLS handshake, within `connect_timeout`
    /// again. The socket gets `TCP_NODELAY`: a request is one small write that must leave at
    /// once.
    pub(crate) fn open(
        address: &str,
        connect_timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> io::Result<Connection> {
        assert!(
            !connect_timeout.is_zero(),
            "connection: a zero connect timeout"
        );
        let mut last_error = None;
        for socket_address in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&socket_address, connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    let stream = match tls {
                        None => Stream::Plain(stream),
                        Some(tls) => handshake(tls, address, stream, connect_timeout)?,
                    };
                    return Ok(Connection {
                        stream,
                        lines: ResponseLines::default(),
                        read_buffer: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
        }))
    }

    /// Writes one whole line (one syscall for a short line) before `deadline`.
    pub(crate) fn send(&mut self, line: &[u8], deadline: Instant) -> Result<(), ConnectionError> {
        assert!(
            line.ends_with(b"\n"),
            "connection: a request without its newline"
        );
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.stream
            .socket()
            .set_write_timeout(Some(remaining.max(TIMEOUT_MIN)))
            .and_then(|()| self.stream.write_all(line))
            .map_err(|error| ConnectionError::Broken(format!("sending failed: {error}")))
    }

    /// The next response line, or `None` if none came before `deadline`.
    pub(crate) fn receive(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, ConnectionError> {
        // Bounded by the deadline: every round either returns, or reads until the socket's
        // timeout, which never reaches past the deadline.
        loop {
            if let Some(line) = self.lines.pop() {
                return Ok(Some(line));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let remaining = (deadline - now).max(TIMEOUT_MIN);
            if let Err(error) = self.stream.socket().set_read_timeout(Some(remaining)) {
                return Err(ConnectionError::Broken(format!("socket failed: {error}")));
            }
            let read = match self.stream.read(&mut self.read_buffer) {
                Ok(0) => {
                    return Err(ConnectionError::Broken(
                        "the server closed the connection".into(),
                    ));
                }
                Ok(read) => read,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(error) => {
                    return Err(ConnectionError::Broken(format!(
                        "receiving failed: {error}"
                    )));
                }
            };
            self.lines
                .feed(&self.read_buffer[..read])
                .map_err(ConnectionError::Protocol)?;
        }
    }
}
