//! KafScale control plane: the metadata store (one trait, an embedded
//! implementation persisted in the data directory, and etcd), the typed
//! metadata layer on top of it, the partition assigner, and the Kubernetes
//! operator.
//!
//! Guarantees: every read-modify-write of metadata goes through a
//! compare-and-swap on the key's modification revision, so two writers never
//! silently overwrite each other.

pub mod acl;
pub mod assigner;
pub mod keys;
pub mod lease;
pub mod log_policy;
pub mod metadata;
pub mod offsets_topic;
pub mod operator;
pub mod quota;
pub mod store;
pub mod topic_config;

pub use metadata::{MetaError, Metadata};
pub use store::{
    embedded::EmbeddedStore, etcd::EtcdStore, Compare, KeyValue, MetadataStore, StoreError, TxnOp,
    WatchEvent, WatchStream,
};
