//! KafScale's contracts in one place: the metadata values kept in the metadata
//! store (`kafscale.metadata.v1`) and the internal gateway → worker data-plane
//! gRPC service (`kafscale.data.v1`). Components depend on this crate, never on
//! each other's internals.

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
}

/// Records of the group coordinator's log (`__consumer_offsets`).
pub mod groups {
    pub mod v1 {
        tonic::include_proto!("kafscale.groups.v1");
    }
}
