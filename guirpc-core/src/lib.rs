//! guirpc: remote procedure calls and functions as a service over RabbitMQ.
//!
//! Mark ordinary functions with [`rpc`], serve them with a [`Server`] (or the `guirpc serve`
//! command), and call them from other programs through a [`Client`] or a
//! [`BlockingClient`], by name or through the typed stubs `#[rpc]` generates.
//!
//! ```no_run
//! use guirpc_core::{rpc, Client, Server};
//!
//! /// Adds two numbers.
//! #[rpc]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // In the service:
//! let server = Server::builder().queue("calculator").start().await?;
//!
//! // In a caller:
//! let client = Client::builder().queue("calculator").connect().await?;
//! assert_eq!(add::call(&client, 1, 2).await?, 3);
//! # Ok(()) }
//! ```
//!
//! The wire protocol is specified in `docs/PROTOCOL.md`.

#![warn(missing_docs)]

extern crate self as guirpc_core;

pub mod access;
pub mod caller;
pub(crate) mod client;
pub mod codec;
pub mod config;
pub mod dead;
pub mod delay;
mod duration;
mod envelope;
mod error;
mod link;
mod message;
pub mod metrics;
pub mod middleware;
pub mod pipe;
pub mod protocol;
pub mod registry;
pub mod retry;
pub mod schema;
mod server;
pub mod stream;
pub mod testing;
pub mod trace;
#[cfg(feature = "otel")]
pub use trace::otel;
mod sync;
mod uri;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use caller::Caller;
pub use client::{BlockingClient, BlockingItems, Client, ClientBuilder, Event, Subscription};
pub use codec::{Bytes, Codec};
pub use config::Settings;
pub use error::{Error, RemoteError};
#[doc = include_str!("rpc.md")]
pub use guirpc_macros::rpc;
pub use guirpc_macros::subscribe;
/// The AMQP client guirpc is built on, for its types (`FieldTable`, ...).
pub use lapin;
pub use metrics::Metrics;
pub use metrics::http::Readiness;
pub use protocol::ErrorCode;
pub use registry::{Function, Registry, Subscriber};
/// The JSON Schema crate whose `JsonSchema` derive gives a type its schema in
/// `guirpc.describe` (see [`schema`]).
pub use schemars;
pub use server::{ServeError, Server, ServerBuilder, shutdown_signal};
pub use stream::ItemStream;
