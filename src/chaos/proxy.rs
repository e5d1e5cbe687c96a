//! The network between chaos's servers: one TCP proxy per ordered pair of servers, on
//! loopback, through which each server dials the other. The proxy can cut each direction,
//! delay it and lose bytes in it, as [`LinkRules`] say at the moment each chunk passes.
//!
//! Server `i` reaches server `j` at [`LinkProxy::address`]`(i, j)`; the proxy forwards to
//! `j`'s real port. Peer connections are opened by the sending server (`net::peer::transport`),
//! so the forward direction of link `(i, j)` carries `i`'s Raft messages and keepalives, and
//! the backward direction `j`'s keepalives. A rule about bytes from `a` to `b` applies to both
//! links between them: the forward direction of `(a, b)` and the backward direction of
//! `(b, a)`. Clients never pass through here.
//!
//! How it models a real network, on TCP's terms:
//! - A chunk that a cut or a loss catches is gone, and the direction it was in is **broken**
//!   for good: it forwards nothing more, not even the close. TCP would retransmit the chunk
//!   with a growing back-off and deliver it late; a broken direction is that back-off never
//!   ending, so only a server that notices the silence and redials gets through again. That is
//!   what the peer transport's silence bound is for, and a link that relied on TCP alone
//!   would never come back here.
//! - A connection opened across a cut is accepted here (as the kernel would send the SYN) but
//!   its first bytes are lost: the proxy never even dials the far side, and the connector's
//!   attempt runs out of time, as when a SYN gets no answer.
//! - A healthy direction forwards a close as a close.
//!
//! It must never touch the servers themselves, and never hold more than its bounded queues.

use super::schedule::Action;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Chunks queued in one direction of one connection before the reader waits: a destination
/// that stops reading (a paused server) pushes back on its sender, as TCP's window would.
const CHUNKS_QUEUED_MAX: usize = 256;
const CHUNK_BYTES: usize = 16 * 1024;
/// How long the proxy waits to reach the destination server.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the network does to bytes from one server to another now. Servers are numbered from 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkRules {
    /// `(from, to)`: nothing from `from` reaches `to`.
    pub blocked: BTreeSet<(usize, usize)>,
    /// `(from, to)`: bytes from `from` to `to` arrive this many milliseconds late.
    pub delay_ms: BTreeMap<(usize, usize), u64>,
    /// `(from, to)`: each chunk from `from` to `to` is lost with this probability, in
    /// thousandths.
    pub drop_per_mille: BTreeMap<(usize, usize), u32>,
}

impl LinkRules {
    /// The rules that carry out a network fault among `servers` servers; `None` for an action
    /// that is not about the network (kills, pauses). `isolated` is the server an isolation
    /// cuts off, resolved by the caller (it may name the leader).
    pub fn for_action(
        action: &Action,
        servers: usize,
        isolated: Option<usize>,
    ) -> Option<LinkRules> {
        let mut rules = LinkRules::default();
        let both_ways = |rules: &mut LinkRules, a: usize, b: usize| {
            rules.blocked.insert((a, b));
            rules.blocked.insert((b, a));
        };
        match action {
            Action::Partition { groups } => {
                for &a in &groups[0] {
                    for &b in &groups[1] {
                        both_ways(&mut rules, a, b);
                    }
                }
            }
            Action::Isolate(_) => {
                let isolated = isolated.expect("an isolation names its server");
                for other in (0..servers).filter(|&s| s != isolated) {
                    both_ways(&mut rules, isolated, other);
                }
            }
            Action::Cut { from, to } => {
                for &to in to {
                    rules.blocked.insert((*from, to));
                }
            }
            Action::Delay { server, delay_ms } => {
                for other in (0..servers).filter(|s| s != server) {
                    rules.delay_ms.insert((*server, other), *delay_ms);
                    rules.delay_ms.insert((other, *server), *delay_ms);
                }
            }
            Action::Drop { server, per_mille } => {
                for other in (0..servers).filter(|s| s != server) {
                    rules.drop_per_mille.insert((*server, other), *per_mille);
                    rules.drop_per_mille.insert((other, *server), *per_mille);
                }
            }
            Action::Kill(_) | Action::Pause(_) => return None,
        }
        Some(rules)
    }
}

/// What happens to one chunk.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Fate {
    Deliver { delay: Duration },
    Lost,
}

/// The rules in force and the stream that decides losses.
struct Network {
    rules: LinkRules,
    rng: ChaCha8Rng,
}

impl Network {
    fn fate(&mut self, from: usize, to: usize) -> Fate {
        if self.rules.blocked.contains(&(from, to)) {
            return Fate::Lost;
        }
        if let Some(&per_mille) = self.rules.drop_per_mille.get(&(from, to))
            && self.rng.random_range(0..1000) < per_mille
        {
            return Fate::Lost;
        }
        let delay_ms = self.rules.delay_ms.get(&(from, to)).copied().unwrap_or(0);
        Fate::Deliver {
            delay: Duration::from_millis(delay_ms),
        }
    }
}

/// Counts of what the proxy did, over the whole run.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    pub connections: AtomicU64,
    /// Directions of connections broken by a cut or a loss.
    pub broken: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub bytes_lost: AtomicU64,
}

/// The proxies of a cluster, served by one tokio thread. Dropping it closes every listener and
/// connection.
pub struct LinkProxy {
    network: Arc<Mutex<Network>>,
    addresses: BTreeMap<(usize, usize), SocketAddr>,
    counters: Arc<ProxyCounters>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkProxy {
    /// Binds a loopback listener for every ordered pair of `servers` (their real client and
    /// peer ports) and starts forwarding. `seed` seeds the losses.
    pub fn start(servers: &[SocketAddr], seed: u64) -> std::io::Result<LinkProxy> {
        let mut listeners = Vec::new();
        let mut addresses = BTreeMap::new();
        for from in 0..servers.len() {
            for to in (0..servers.len()).filter(|&to| to != from) {
                let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                listener.set_nonblocking(true)?;
                addresses.insert((from, to), listener.local_addr()?);
                listeners.push((from, to, listener));
            }
        }
        let network = Arc::new(Mutex::new(Network {
            rules: LinkRules::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }));
        let counters = Arc::new(ProxyCounters::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let servers = servers.to_vec();
        let task_network = Arc::clone(&network);
        let task_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("chaos-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (from, to, listener) in listeners {
                        let listener = TcpListener::from_std(listener).expect("inside the runtime");
                        let link = Link {
                            from,
                            to,
                            destination: servers[to],
                            network: Arc::clone(&task_network),
                            counters: Arc::clone(&task_counters),
                        };
                        tokio::spawn(accept_loop(listener, link));
                    }
                    let _ = stopped.await;
                });
            })?;
        Ok(LinkProxy {
            network,
            addresses,
            counters,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Where server `from` must dial server `to`.
    pub fn address(&self, from: usize, to: usize) -> SocketAddr {
        self.addresses[&(from, to)]
    }

    /// Puts `rules` in force for every chunk from now on.
    pub fn set_rules(&self, rules: LinkRules) {
        self.network.lock().expect("the proxy's rules").rules = rules;
    }

    /// Heals the network: nothing blocked, delayed or lost from now on. Directions already
    /// broken stay broken: their connections are gone, as after a real partition.
    pub fn heal(&self) {
        self.set_rules(LinkRules::default());
    }

    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One ordered pair's proxy.
#[derive(Clone)]
struct Link {
    from: usize,
    to: usize,
    destination: SocketAddr,
    network: Arc<Mutex<Network>>,
    counters: Arc<ProxyCounters>,
}

impl Link {
    fn fate(&self, from: usize, to: usize) -> Fate {
        self.network
            .lock()
            .expect("the proxy's rules")
            .fate(from, to)
    }
}

async fn accept_loop(listener: TcpListener, link: Link) {
    // Bounded by the proxy's life.
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        link.counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve_connection(stream, link.clone()));
    }
}

/// One connection from `link.from`: its first bytes decide whether the far side is dialled at
/// all (see the module documentation), then both directions are carried until both end.
async fn serve_connection(source: TcpStream, link: Link) {
    let (mut source_read, source_write) = source.into_split();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let first = match source_read.read(&mut chunk).await {
        Ok(0) | Err(_) => return,
        Ok(read) => read,
    };
    let delay = match link.fate(link.from, link.to) {
        Fate::Lost => {
            link.counters.broken.fetch_add(1, Ordering::Relaxed);
            link.counters
                .bytes_lost
                .fetch_add(first as u64, Ordering::Relaxed);
            black_hole(source_read, &link.counters).await;
            return;
        }
        Fate::Deliver { delay } => delay,
    };
    let upstream = tokio::time::timeout(
        UPSTREAM_CONNECT_TIMEOUT,
        TcpStream::connect(link.destination),
    )
    .await;
    // The destination is down: closing tells the dialling server so, as a refusal would.
    let Ok(Ok(destination)) = upstream else {
        return;
    };
    let _ = destination.set_nodelay(true);
    let (destination_read, destination_write) = destination.into_split();
    let forward = Direction {
        from: link.from,
        to: link.to,
        link: link.clone(),
    };
    let backward = Direction {
        from: link.to,
        to: link.from,
        link,
    };
    let first = (tokio::time::Instant::now() + delay, chunk[..first].to_vec());
    // The write halves a broken direction kept open close only here, once both directions
    // ended: closing one earlier would carry a close across a cut.
    let _kept_open = tokio::join!(
        forward.carry(source_read, destination_write, Some(first)),
        backward.carry(destination_read, source_write, None),
    );
}

/// Reads and forgets everything until the sender closes.
async fn black_hole(mut reader: impl AsyncReadExt + Unpin, counters: &ProxyCounters) {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    // Bounded by the connection's life.
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                counters
                    .bytes_lost
                    .fetch_add(read as u64, Ordering::Relaxed);
            }
        }
    }
}

/// One direction of one connection.
struct Direction {
    from: usize,
    to: usize,
    link: Link,
}

/// A chunk due at an instant; `None` is the sender's close.
type Due = (tokio::time::Instant, Option<Vec<u8>>);

impl Direction {
    /// Reads from `reader`, decides each chunk's fate, and writes what survives to `writer` when
    /// it is due. Returns once the reader closed and everything due was written (or could not
    /// be), with the writer if it was not shut down: dropping it would close it.
    async fn carry(
        &self,
        mut reader: tokio::net::tcp::OwnedReadHalf,
        writer: tokio::net::tcp::OwnedWriteHalf,
        first: Option<(tokio::time::Instant, Vec<u8>)>,
    ) -> Option<tokio::net::tcp::OwnedWriteHalf> {
        let (queue, due) = mpsc::channel::<Due>(CHUNKS_QUEUED_MAX);
        let reading = async move {
            if let Some((at, bytes)) = first
                && queue.send((at, Some(bytes))).await.is_err()
            {
                return;
            }
            let counters = &self.link.counters;
            let mut chunk = vec![0u8; CHUNK_BYTES];
            // Bounded by the connection's life.
            loop {
                let read = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        let _ = queue.send((tokio::time::Instant::now(), None)).await;
                        return;
                    }
                    Ok(read) => read,
                };
                match self.link.fate(self.from, self.to) {
                    Fate::Lost => {
                        counters.broken.fetch_add(1, Ordering::Relaxed);
                        counters
                            .bytes_lost
                            .fetch_add(read as u64, Ordering::Relaxed);
                        // Broken for good: nothing more passes, not even the close.
                        drop(queue);
                        black_hole(reader, counters).await;
                        return;
                    }
                    Fate::Deliver { delay } => {
                        let at = tokio::time::Instant::now() + delay;
                        if queue
                            .send((at, Some(chunk[..read].to_vec())))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        };
        let ((), writer) = tokio::join!(reading, self.write_due(due, writer));
        writer
    }

    /// Writes each chunk when it is due; shuts the writer down at the sender's close. Returns the
    /// writer when the queue ended without a close (a broken direction).
    async fn write_due(
        &self,
        mut due: mpsc::Receiver<Due>,
        mut writer: tokio::net::tcp::OwnedWriteHalf,
    ) -> Option<tokio::net::tcp::OwnedWriteHalf> {
        // Bounded by the reader, which ends the queue.
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            let Some(bytes) = bytes else {
                let _ = writer.shutdown().await;
                return None;
            };
            if writer.write_all(&bytes).await.is_err() {
                // The destination is gone; dropping the queue stops the reader's sends.
                return None;
            }
            self.link
                .counters
                .bytes_forwarded
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Some(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::schedule::Target;
    use std::io::{Read, Write};

    /// An echo server on loopback: what stands in for a server in these stories.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    fn round_trip(stream: &mut std::net::TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(bytes)?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back)?;
        Ok(back)
    }

    fn dial(address: SocketAddr) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        stream
    }

    #[test]
    fn bytes_pass_until_a_cut_and_the_cut_connection_stays_dead_after_the_heal() {
        let servers = [echo_server(), echo_server()];
        let proxy = LinkProxy::start(&servers, 1).unwrap();
        let mut stream = dial(proxy.address(0, 1));
        assert_eq!(round_trip(&mut stream, b"hello").unwrap(), b"hello");

        let cut = Action::Cut {
            from: 0,
            to: vec![1],
        };
        proxy.set_rules(LinkRules::for_action(&cut, 2, None).unwrap());
        assert!(
            round_trip(&mut stream, b"lost").is_err(),
            "a cut direction delivers"
        );
        proxy.heal();
        assert!(
            round_trip(&mut stream, b"again").is_err(),
            "a broken direction came back by itself"
        );
        // A new connection after the heal goes through.
        let mut fresh = dial(proxy.address(0, 1));
        assert_eq!(round_trip(&mut fresh, b"fresh").unwrap(), b"fresh");
        assert!(proxy.counters().broken.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn a_one_way_cut_also_silences_the_answers_on_the_other_servers_link() {
        let servers = [echo_server(), echo_server()];
        let proxy = LinkProxy::start(&servers, 1).unwrap();
        // s2 dials s1; its bytes reach s1's echo, but the echo is s1 speaking to s2.
        let mut stream = dial(proxy.address(1, 0));
        assert_eq!(round_trip(&mut stream, b"ping").unwrap(), b"ping");
        let cut = Action::Cut {
            from: 0,
            to: vec![1],
        };
        proxy.set_rules(LinkRules::for_action(&cut, 2, None).unwrap());
        assert!(round_trip(&mut stream, b"pong?").is_err());
    }

    #[test]
    fn a_connection_opened_across_a_partition_never_reaches_the_far_side() {
        let servers = [echo_server(), echo_server(), echo_server()];
        let proxy = LinkProxy::start(&servers, 1).unwrap();
        let partition = Action::Partition {
            groups: [vec![0], vec![1, 2]],
        };
        proxy.set_rules(LinkRules::for_action(&partition, 3, None).unwrap());
        let mut stream = dial(proxy.address(0, 2));
        assert!(round_trip(&mut stream, b"syn").is_err());
        // Links inside a group are untouched.
        let mut inside = dial(proxy.address(1, 2));
        assert_eq!(round_trip(&mut inside, b"ok").unwrap(), b"ok");
    }

    #[test]
    fn isolation_blocks_every_link_of_one_server_both_ways_and_no_other() {
        let rules =
            LinkRules::for_action(&Action::Isolate(Target::Leader { fallback: 0 }), 3, Some(1))
                .unwrap();
        let expected: BTreeSet<(usize, usize)> =
            [(1, 0), (0, 1), (1, 2), (2, 1)].into_iter().collect();
        assert_eq!(rules.blocked, expected);
        assert!(LinkRules::for_action(&Action::Kill(Target::Servers(vec![0])), 3, None).is_none());
    }

    #[test]
    fn a_delayed_link_still_delivers_everything_in_order() {
        let servers = [echo_server(), echo_server()];
        let proxy = LinkProxy::start(&servers, 1).unwrap();
        proxy.set_rules(
            LinkRules::for_action(
                &Action::Delay {
                    server: 1,
                    delay_ms: 30,
                },
                2,
                None,
            )
            .unwrap(),
        );
        let mut stream = dial(proxy.address(0, 1));
        for word in [&b"one"[..], b"two", b"three"] {
            assert_eq!(round_trip(&mut stream, word).unwrap(), word);
        }
    }
}
