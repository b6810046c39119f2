//! The metadata key layout, in one place. All keys live under
//! `/kafscale/<namespace>/`; documented in docs/metadata.md.

use uuid::Uuid;

/// Builds keys for one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// Keys under `/kafscale/<namespace>/`.
    pub fn new(namespace: &str) -> Self {
        Self {
            root: format!("/kafscale/{namespace}/"),
        }
    }
    /// `ClusterInfo`.
    pub fn cluster(&self) -> String {
        format!("{}cluster", self.root)
    }
    /// Prefix of all `Topic` keys.
    pub fn topics(&self) -> String {
        format!("{}topics/", self.root)
    }
    /// One `Topic`, by name.
    pub fn topic(&self, name: &str) -> String {
        format!("{}topics/{name}", self.root)
    }
    /// Prefix of every `PartitionState` of a topic.
    pub fn partitions_of(&self, topic_id: Uuid) -> String {
        format!("{}partitions/{}/", self.root, topic_id.simple())
    }
    /// One `PartitionState`.
    pub fn partition(&self, topic_id: Uuid, partition: i32) -> String {
        format!("{}{partition:010}", self.partitions_of(topic_id))
    }
    /// Prefix of all `Assignment` keys.
    pub fn assignments(&self) -> String {
        format!("{}assignments/", self.root)
    }
    /// Prefix of the assignments of one topic.
    pub fn assignments_of(&self, topic_id: Uuid) -> String {
        format!("{}{}/", self.assignments(), topic_id.simple())
    }
    /// One partition's `Assignment`.
    pub fn assignment(&self, topic_id: Uuid, partition: i32) -> String {
        format!("{}{partition:010}", self.assignments_of(topic_id))
    }
    /// Parses an assignment key back into (topic id, partition).
    pub fn parse_assignment(&self, key: &str) -> Option<(Uuid, i32)> {
        let rest = key.strip_prefix(&self.assignments())?;
        let (tid, p) = rest.split_once('/')?;
        Some((Uuid::parse_str(tid).ok()?, p.parse().ok()?))
    }
    /// Prefix of all `WorkerRegistration` keys.
    pub fn workers(&self) -> String {
        format!("{}workers/", self.root)
    }
    /// One worker's registration.
    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}{worker_id}", self.workers())
    }
    /// Prefix of all `GatewayRegistration` keys.
    pub fn gateways(&self) -> String {
        format!("{}gateways/", self.root)
    }
    /// One gateway's registration.
    pub fn gateway(&self, gateway_id: &str) -> String {
        format!("{}{gateway_id}", self.gateways())
    }
    /// The next unallocated producer id (`ProducerIdBlock`).
    pub fn producer_ids(&self) -> String {
        format!("{}producer-ids", self.root)
    }
    /// Prefix of all SCRAM credentials.
    pub fn scram_credentials(&self) -> String {
        format!("{}users/", self.root)
    }
    /// One user's SCRAM credential for one mechanism; the name in hex, so
    /// no user name needs escaping.
    pub fn scram_credential(&self, user: &str, mechanism: i32) -> String {
        format!(
            "{}/{mechanism}",
            hex_after(self.scram_credentials(), user.as_bytes())
        )
    }
    /// Prefix of all `AclBinding` keys.
    pub fn acls(&self) -> String {
        format!("{}acls/", self.root)
    }
    /// The key of one ACL binding: its canonical encoding in hex, so equal
    /// bindings share a key and no name needs escaping.
    pub fn acl(&self, canonical: &[u8]) -> String {
        hex_after(self.acls(), canonical)
    }
    /// Prefix of all `ClientQuota` keys.
    pub fn client_quotas(&self) -> String {
        format!("{}quotas/", self.root)
    }
    /// The key of one client quota entity: its canonical encoding in hex.
    pub fn client_quota(&self, canonical: &[u8]) -> String {
        hex_after(self.client_quotas(), canonical)
    }
    /// The assigner leader's key (held under the leader's lease).
    pub fn assigner_leader(&self) -> String {
        format!("{}assigner-leader", self.root)
    }
    /// The last stream epoch handed to a worker id.
    pub fn stream_epoch(&self, worker_id: &str) -> String {
        format!("{}stream-epochs/{worker_id}", self.root)
    }
}

/// `prefix` followed by `bytes` in lower-case hex (names in keys need no escaping).
fn hex_after(mut prefix: String, bytes: &[u8]) -> String {
    use std::fmt::Write;
    for b in bytes {
        let _ = write!(prefix, "{b:02x}");
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_key_round_trips() {
        let k = Keys::new("ns");
        let id = Uuid::new_v4();
        assert_eq!(k.parse_assignment(&k.assignment(id, 7)), Some((id, 7)));
        assert!(k.assignment(id, 7).starts_with(&k.assignments_of(id)));
    }
}
