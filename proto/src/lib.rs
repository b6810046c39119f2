//! KafScale's contracts in one place: the metadata values kept in the metadata
//! store (`kafscale.metadata.v1`) and the internal gateway → worker data-plane
//! gRPC service (`kafscale.data.v1`). Components depend on this crate, never on
//! each other's internals.

pub mod trace_context;

/// Metadata values stored in etcd or the embedded store.
pub mod metadata {
    pub mod v1 {
        tonic::include_proto!("kafscale.metadata.v1");
    }
}

/// Internal data plane between gateways and log workers.
pub mod data {
    pub mod v1 {
        tonic::include_proto!("kafscale.data.v1");
    }

    /// HTTP/2 settings of the data plane, on both ends of the gateway →
    /// worker hop. Produce bodies and fetch answers are up to a request's
    /// size: small windows serialise them on window updates, and small
    /// frames cost a header, a flow-control step and a wake-up per 16 KiB.
    pub mod http2 {
        /// Initial flow-control window of each stream.
        pub const STREAM_WINDOW: u32 = 16 << 20;
        /// Initial flow-control window of each connection.
        pub const CONNECTION_WINDOW: u32 = 64 << 20;
        /// Largest DATA frame either end accepts.
        pub const MAX_FRAME: u32 = 1 << 20;
    }
}

impl data::v1::ProducePartitionResult {
    /// Kafka's NOT_LEADER_OR_FOLLOWER error code.
    pub const NOT_LEADER_OR_FOLLOWER: i32 = 6;

    /// The part was refused before it got offsets because the worker does
    /// not own the partition: the gateway retries it at the owner. A part
    /// that was appended and then failed is answered to the client instead,
    /// which retries it in its own order (see `LogWorker.Produce`).
    pub fn refused_as_not_owner(&self) -> bool {
        !self.appended && self.error_code == Self::NOT_LEADER_OR_FOLLOWER
    }
}

/// The control API of every process (`kafscale ctl`, the operator).
pub mod control {
    pub mod v1 {
        tonic::include_proto!("kafscale.control.v1");
    }
}

/// Records of the group coordinator's log (`__consumer_offsets`).
pub mod groups {
    pub mod v1 {
        tonic::include_proto!("kafscale.groups.v1");
    }
}

/// The "sequenced" signal of the data plane's two-message streams
/// (`LogWorker.Produce`, `LogWorker.Group`): a request's place in the order
/// of its client connection is fixed (a produce's batches have offsets, a
/// commit's records are appended), so the connection's next request may
/// start. The gateway holds one per request; the worker holds one per
/// streamed call and reports it back as the stream's first message.
pub mod sequencing {
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    /// Fires at most once: when told, or on drop at the latest (a request
    /// that ends without saying so no longer holds its connection up).
    pub struct Sequenced(Mutex<Option<oneshot::Sender<()>>>);

    impl Sequenced {
        /// Fires `tx` when the request is sequenced.
        pub fn new(tx: oneshot::Sender<()>) -> Self {
            Self(Mutex::new(Some(tx)))
        }

        /// Reports the request sequenced now (no effect after the first time).
        pub fn fire(&self) {
            let tx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        }
    }

    impl Drop for Sequenced {
        fn drop(&mut self) {
            self.fire();
        }
    }
}
