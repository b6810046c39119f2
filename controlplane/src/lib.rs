//! KafScale control plane: the metadata store (one trait, an embedded
//! implementation persisted in the data directory, etcd later), the typed
//! metadata layer on top of it, and the partition assigner.
//!
//! Guarantees: every read-modify-write of metadata goes through a
//! compare-and-swap on the key's modification revision, so two writers never
//! silently overwrite each other.

pub mod assigner;
pub mod keys;
pub mod metadata;
pub mod offsets_topic;
pub mod store;

pub use metadata::{MetaError, Metadata};
pub use store::{embedded::EmbeddedStore, KeyValue, MetadataStore, StoreError, WatchEvent};
