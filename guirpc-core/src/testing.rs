//! Tests without a broker: a [`Client`] whose calls are served in this process, by the
//! program's own `#[rpc]` functions, through the same codec, dispatch and layers as over
//! RabbitMQ.
//!
//! ```standalone_crate
//! use guirpc_core::rpc;
//!
//! /// Adds two numbers.
//! #[rpc]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), guirpc_core::Error> {
//! let client = guirpc_core::testing::client();
//! assert_eq!(add::call(&client, 1, 2).await?, 3);
//! # Ok(()) }
//! ```
//!
//! Arguments and replies are encoded and decoded exactly as on the wire, errors arrive as
//! the same [`Error`](crate::Error) variants (an unknown function is a remote
//! `not_found`, a slow one a [`Error::Timeout`](crate::Error::Timeout), a call to another
//! queue [`Error::NoRoute`](crate::Error::NoRoute)), and the server's and the client's
//! layers run around each call. Build the server side with
//! [`ServerBuilder::in_memory`](crate::ServerBuilder::in_memory) to give it layers,
//! metrics or a registry of its own.

use std::sync::Arc;

use crate::client::transport::Transport;
use crate::client::transport::memory::InMemory;
use crate::middleware::{ClientService, ServerService};
use crate::server::{ServeError, ServerBuilder};
use crate::{Client, ClientBuilder, Server};

/// A client of every `#[rpc]` function of this program, served in memory, with the
/// default settings. Panics if two functions share a name (as a server would refuse to
/// start).
pub fn client() -> Client {
    match Server::builder().in_memory() {
        Ok(server) => server.client(),
        Err(err) => panic!("cannot serve this program's functions in memory: {err}"),
    }
}

impl ServerBuilder {
    /// The server's functions, layers and metrics, serving in this process without a
    /// broker: for tests (see [`crate::testing`]). Pipe functions are not served in memory.
    #[allow(clippy::result_large_err)]
    pub fn in_memory(self) -> Result<InMemoryServer, ServeError> {
        let (queue, service) = self.in_memory_parts()?;
        Ok(InMemoryServer { service, queue })
    }
}

/// A server's pipeline, serving in memory: the functions, layers and metrics of the
/// [`ServerBuilder`] it was built from.
#[derive(Clone)]
pub struct InMemoryServer {
    pub(crate) service: ServerService,
    pub(crate) queue: Arc<str>,
}

impl std::fmt::Debug for InMemoryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryServer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl InMemoryServer {
    /// A client of this server, with the default client settings.
    pub fn client(&self) -> Client {
        self.client_with(Client::builder())
    }

    /// A client of this server, with `builder`'s settings and layers (its URI is unused).
    pub fn client_with(&self, builder: ClientBuilder) -> Client {
        let builder = builder.queue(&*self.queue);
        let transport = InMemory::new(self.service.clone(), self.queue.clone(), None);
        builder.build(ClientService::own(transport), Transport::Memory)
    }

    /// A client whose calls come from `user`, as if a broker had verified it: what
    /// [`Caller::current`](crate::Caller::current) says, and what permissions are checked
    /// against. (The other clients' calls carry no identity: `Caller::Unknown`.)
    pub fn client_as(&self, user: &str) -> Client {
        let builder = Client::builder().queue(&*self.queue);
        let transport = InMemory::new(self.service.clone(), self.queue.clone(), Some(user.into()));
        builder.build(ClientService::own(transport), Transport::Memory)
    }
}
