//! KafScale gateway: speaks the Kafka protocol to clients and routes data
//! requests to log workers over the internal gRPC contract.
//!
//! Where a produce is parsed: `conn` (framing) → `dispatch` (header, version)
//! → `handlers::produce` → `router` (gRPC to the owning worker). Who the
//! client is: `auth` (TLS, SASL), between accepting and dispatching. How fast
//! it may go: `quota` (charged by handlers, paid by muting in `conn`).

pub mod alloc;
pub mod auth;
pub mod budget;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod dispatch;
pub mod handlers;
pub mod legacy;
pub mod metrics;
pub mod quota;
pub mod rlimit;
pub mod router;
#[cfg(test)]
mod testing;

pub use config::GatewayConfig;
pub use conn::serve;
