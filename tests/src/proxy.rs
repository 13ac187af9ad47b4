//! A TCP proxy on loopback, between a process under test and its broker, that can do to
//! the connections through it what a network does: delay every packet, go silent (stop
//! forwarding while keeping both sockets open, as a firewall or NAT that dropped the flow
//! does: no FIN, no RST), or reset them.
//!
//! Freezing and resetting act on the connections open at that moment; connections made
//! after pass as usual, so a process that reconnects gets through again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A running proxy; it stops, and drops every connection, when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    delay: Mutex<Duration>,
    /// New connections are reset at once (as a network that lets nothing through).
    refusing: AtomicBool,
    /// One per connection through the proxy: set to freeze it, dropped to reset it.
    connections: Mutex<Vec<Connection>>,
}

#[derive(Debug)]
struct Connection {
    frozen: watch::Sender<bool>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_owned();
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if shared.refusing.load(Ordering::Relaxed) {
                        #[allow(deprecated)] // a linger of zero never blocks: see `open`
                        let _ = client.set_linger(Some(Duration::ZERO));
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    shared.open(client, server);
                }
            }
        });
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `uri` with its host and port replaced by the proxy's.
    pub fn uri(&self, uri: &str) -> String {
        let (scheme, rest) = uri.split_once("://").expect("a URI");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let credentials = authority
            .rsplit_once('@')
            .map_or(String::new(), |(c, _)| format!("{c}@"));
        format!("{scheme}://{credentials}{}{path}", self.addr)
    }

    /// Delays every chunk of data, each way, by `delay` (order kept).
    pub fn delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Whether new connections are reset as they come (the open ones are untouched).
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::Relaxed);
    }

    /// The connections open now go silent: nothing is forwarded either way, both sockets
    /// stay open. Returns how many.
    pub fn freeze(&self) -> usize {
        let connections = self.shared.connections.lock().unwrap();
        for connection in connections.iter() {
            let _ = connection.frozen.send(true);
        }
        connections.len()
    }

    /// The connections open now are reset (RST to the process under test). Returns how many.
    pub fn reset(&self) -> usize {
        let connections = std::mem::take(&mut *self.shared.connections.lock().unwrap());
        let count = connections.len();
        // Aborting the tasks drops the sockets, which close with a reset (linger 0).
        for connection in connections {
            for task in connection.tasks {
                task.abort();
            }
        }
        count
    }

    /// How many connections the proxy holds (every one made through it but those reset).
    pub fn connections(&self) -> usize {
        self.shared.connections.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

impl Shared {
    fn open(self: &Arc<Self>, client: TcpStream, server: TcpStream) {
        for socket in [&client, &server] {
            let _ = socket.set_nodelay(true);
            // A linger of zero: closing resets the connection, and never blocks (what
            // the deprecation warns of is a linger above zero).
            #[allow(deprecated)]
            let _ = socket.set_linger(Some(Duration::ZERO));
        }
        let (frozen, watching) = watch::channel(false);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let tasks = [
            self.pipe(client_read, server_write, watching.clone()),
            self.pipe(server_read, client_write, watching),
        ];
        self.connections
            .lock()
            .unwrap()
            .push(Connection { frozen, tasks });
    }

    /// Forwards `from` to `to`, each chunk after the delay in force when it was read,
    /// until either side closes or the connection is frozen (then nothing more moves).
    fn pipe(
        self: &Arc<Self>,
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        frozen: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let shared = self.clone();
        let mut reading_frozen = frozen.clone();
        let reader = async move {
            let mut buffer = vec![0; 64 * 1024];
            loop {
                let read = tokio::select! {
                    read = from.read(&mut buffer) => Some(read),
                    _ = reading_frozen.wait_for(|frozen| *frozen) => None,
                };
                let Some(read) = read else {
                    return std::future::pending::<()>().await;
                };
                match read {
                    Ok(n) if n > 0 => {
                        let delay = *shared.delay.lock().unwrap();
                        let chunk = (Instant::now() + delay, buffer[..n].to_vec());
                        if chunks.send(chunk).is_err() {
                            return;
                        }
                    }
                    // Closed (or failed): the writer passes the close on once the rest is out.
                    _ => return,
                }
            }
        };
        let writer = async move {
            while let Some((at, chunk)) = due.recv().await {
                tokio::time::sleep_until(at).await;
                let frozen = *frozen.borrow();
                if frozen {
                    return std::future::pending::<()>().await;
                }
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = to.shutdown().await;
            // The half is kept until the proxy resets or drops the connection: dropping
            // both halves closes the socket with a reset, which would cut what the other
            // way still carries.
            std::future::pending::<()>().await
        };
        tokio::spawn(async move {
            tokio::join!(reader, writer);
        })
    }
}
