//! Client quotas (Kafka's KIP-546 model): entities, the keys they may carry,
//! and the precedence rule that picks, for one connection, the entity whose
//! value applies and the group of clients that share it.
//!
//! An entity is `user`, `client-id`, `user` + `client-id`, or `ip` alone;
//! each component names one user / client id / address or, without a name,
//! the default of its type. Enforcement lives in the gateway
//! (`kafscale_gateway::quota`); this module only decides what applies.

use kafscale_proto::metadata::v1::{ClientQuota, QuotaEntityComponent};
use std::collections::HashMap;

/// Entity type names, as Kafka spells them.
pub mod entity_type {
    pub const USER: &str = "user";
    pub const CLIENT_ID: &str = "client-id";
    pub const IP: &str = "ip";
}

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Produce request bytes per second.
    ProducerByteRate,
    /// Fetch response bytes per second.
    ConsumerByteRate,
    /// Percent of one gateway thread's time spent on the clients' requests.
    RequestPercentage,
    /// New connections per second from one address.
    ConnectionCreationRate,
}

impl QuotaKind {
    /// Every kind.
    pub const ALL: [QuotaKind; 4] = [
        QuotaKind::ProducerByteRate,
        QuotaKind::ConsumerByteRate,
        QuotaKind::RequestPercentage,
        QuotaKind::ConnectionCreationRate,
    ];

    /// The quota key (Kafka's config name).
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::ProducerByteRate => "producer_byte_rate",
            QuotaKind::ConsumerByteRate => "consumer_byte_rate",
            QuotaKind::RequestPercentage => "request_percentage",
            QuotaKind::ConnectionCreationRate => "connection_creation_rate",
        }
    }

    /// The kind a quota key names.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == key)
    }

    /// Whether values must be whole numbers (Kafka's LONG and INT quotas).
    fn integral(self) -> bool {
        !matches!(self, QuotaKind::RequestPercentage)
    }

    /// Whether the kind applies to `ip` entities (else to user/client-id ones).
    fn of_ip(self) -> bool {
        matches!(self, QuotaKind::ConnectionCreationRate)
    }
}

/// A component's name: one named entity or the type's default.
pub type Name = Option<String>;

/// A validated quota entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    /// `user` and/or `client-id` (at least one is present).
    Client {
        user: Option<Name>,
        client_id: Option<Name>,
    },
    /// `ip` alone.
    Ip(Name),
}

/// Why an entity or an operation on it is refused (Kafka answers
/// INVALID_REQUEST with this message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaError {
    #[error("unknown entity type '{0}'")]
    UnknownEntityType(String),
    #[error("duplicate entity type '{0}'")]
    DuplicateEntityType(String),
    #[error("an ip entity cannot be combined with user or client-id")]
    IpCombined,
    #[error("empty entity")]
    Empty,
    #[error("'{0}' is not an IP address")]
    BadAddress(String),
    #[error("unknown quota key '{0}'")]
    UnknownKey(String),
    #[error("quota key '{key}' does not apply to this entity")]
    KeyNotForEntity { key: String },
    #[error("quota '{key}' must be a positive{} number, not {value}", if *.integral { " whole" } else { "" })]
    BadValue {
        key: String,
        value: f64,
        integral: bool,
    },
}

impl Entity {
    /// Validates `(type, name)` components as Kafka does.
    pub fn parse<'a>(
        components: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Self, QuotaError> {
        let (mut user, mut client_id, mut ip) = (None, None, None);
        for (t, name) in components {
            let slot = match t {
                entity_type::USER => &mut user,
                entity_type::CLIENT_ID => &mut client_id,
                entity_type::IP => &mut ip,
                other => return Err(QuotaError::UnknownEntityType(other.to_string())),
            };
            if slot.is_some() {
                return Err(QuotaError::DuplicateEntityType(t.to_string()));
            }
            *slot = Some(name.map(str::to_string));
        }
        match (user, client_id, ip) {
            (None, None, None) => Err(QuotaError::Empty),
            (None, None, Some(ip)) => {
                if let Some(addr) = &ip {
                    if addr.parse::<std::net::IpAddr>().is_err() {
                        return Err(QuotaError::BadAddress(addr.clone()));
                    }
                }
                Ok(Entity::Ip(ip))
            }
            (_, _, Some(_)) => Err(QuotaError::IpCombined),
            (user, client_id, None) => Ok(Entity::Client { user, client_id }),
        }
    }

    /// The stored form's entity.
    pub fn from_stored(q: &ClientQuota) -> Result<Self, QuotaError> {
        Self::parse(
            q.entity
                .iter()
                .map(|c| (c.entity_type.as_str(), c.name.as_deref())),
        )
    }

    /// The components, in Kafka's order (user, client-id, ip).
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        match self {
            Entity::Client { user, client_id } => {
                let mut out = Vec::with_capacity(2);
                if let Some(u) = user {
                    out.push((entity_type::USER, u.as_deref()));
                }
                if let Some(c) = client_id {
                    out.push((entity_type::CLIENT_ID, c.as_deref()));
                }
                out
            }
            Entity::Ip(ip) => vec![(entity_type::IP, ip.as_deref())],
        }
    }

    /// The stored form's components.
    pub fn to_stored(&self) -> Vec<QuotaEntityComponent> {
        self.components()
            .into_iter()
            .map(|(t, n)| QuotaEntityComponent {
                entity_type: t.to_string(),
                name: n.map(str::to_string),
            })
            .collect()
    }

    /// A stable byte encoding (the storage key derives from it).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, n) in self.components() {
            out.extend_from_slice(t.as_bytes());
            out.push(0);
            match n {
                Some(n) => {
                    out.push(1);
                    out.extend_from_slice(n.as_bytes());
                }
                None => out.push(0),
            }
            out.push(0);
        }
        out
    }

    /// Checks that `key = value` may be set on this entity.
    pub fn check_value(&self, key: &str, value: f64) -> Result<QuotaKind, QuotaError> {
        let kind = QuotaKind::from_key(key).ok_or_else(|| QuotaError::UnknownKey(key.into()))?;
        if kind.of_ip() != matches!(self, Entity::Ip(_)) {
            return Err(QuotaError::KeyNotForEntity { key: key.into() });
        }
        let whole = (value - value.round()).abs() < 1e-6;
        if !value.is_finite() || value <= 0.0 || (kind.integral() && !whole) {
            return Err(QuotaError::BadValue {
                key: key.into(),
                value,
                integral: kind.integral(),
            });
        }
        Ok(kind)
    }
}

/// The clients that share one quota: the parts of a connection's identity
/// that the matched entity names (empty where it does not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaGroup {
    pub user: String,
    pub client_id: String,
}

/// Every stored quota, for lookups on the request path.
#[derive(Debug, Default, Clone)]
pub struct QuotaSet {
    entities: HashMap<Entity, HashMap<QuotaKind, f64>>,
    /// The kinds some entity sets, so lookups of unset kinds (and of an
    /// empty set, on every request) cost nothing.
    kinds: Vec<QuotaKind>,
}

impl QuotaSet {
    /// The set of stored quotas; entries that do not validate are skipped
    /// (and logged), never applied.
    pub fn new(stored: Vec<ClientQuota>) -> Self {
        let mut entities: HashMap<Entity, HashMap<QuotaKind, f64>> = HashMap::new();
        for q in stored {
            let Ok(entity) = Entity::from_stored(&q) else {
                tracing::warn!(?q, "skipping an invalid stored client quota");
                continue;
            };
            let values = q
                .values
                .iter()
                .filter_map(|(k, v)| entity.check_value(k, *v).ok().map(|kind| (kind, *v)))
                .collect();
            entities.insert(entity, values);
        }
        let kinds = QuotaKind::ALL
            .into_iter()
            .filter(|k| entities.values().any(|v| v.contains_key(k)))
            .collect();
        Self { entities, kinds }
    }

    /// Whether no quota is set.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Whether some entity sets a `kind` quota.
    pub fn sets(&self, kind: QuotaKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Every entity with its values.
    pub fn iter(&self) -> impl Iterator<Item = (&Entity, &HashMap<QuotaKind, f64>)> {
        self.entities.iter()
    }

    /// The `kind` quota for a connection of `user` (the principal's name)
    /// with `client_id`, by Kafka's precedence (user + client-id, user +
    /// default client-id, user, default user + client-id, default user +
    /// default client-id, default user, client-id, default client-id), and
    /// the group of clients sharing it.
    pub fn client(
        &self,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
    ) -> Option<(QuotaGroup, f64)> {
        let named = |s: &str| Some(Some(s.to_string()));
        let default = || Some(None);
        let candidates = [
            (named(user), named(client_id)),
            (named(user), default()),
            (named(user), None),
            (default(), named(client_id)),
            (default(), default()),
            (default(), None),
            (None, named(client_id)),
            (None, default()),
        ];
        candidates.into_iter().find_map(|(u, c)| {
            let group = QuotaGroup {
                user: if u.is_some() {
                    user.into()
                } else {
                    String::new()
                },
                client_id: if c.is_some() {
                    client_id.into()
                } else {
                    String::new()
                },
            };
            let entity = Entity::Client {
                user: u,
                client_id: c,
            };
            let v = *self.entities.get(&entity)?.get(&kind)?;
            Some((group, v))
        })
    }

    /// The connection creation rate for `ip` (its own entity, else the
    /// default ip entity).
    pub fn ip(&self, ip: &str) -> Option<f64> {
        if !self.sets(QuotaKind::ConnectionCreationRate) {
            return None;
        }
        [Entity::Ip(Some(ip.to_string())), Entity::Ip(None)]
            .iter()
            .find_map(|e| {
                self.entities
                    .get(e)?
                    .get(&QuotaKind::ConnectionCreationRate)
                    .copied()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(components: &[(&str, Option<&str>)], values: &[(&str, f64)]) -> ClientQuota {
        ClientQuota {
            entity: components
                .iter()
                .map(|(t, n)| QuotaEntityComponent {
                    entity_type: t.to_string(),
                    name: n.map(str::to_string),
                })
                .collect(),
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    const P: QuotaKind = QuotaKind::ProducerByteRate;

    #[test]
    fn precedence_follows_kafka() {
        let all = [
            quota(&[("client-id", None)], &[("producer_byte_rate", 8.0)]),
            quota(&[("client-id", Some("c"))], &[("producer_byte_rate", 7.0)]),
            quota(&[("user", None)], &[("producer_byte_rate", 6.0)]),
            quota(
                &[("user", None), ("client-id", None)],
                &[("producer_byte_rate", 5.0)],
            ),
            quota(
                &[("user", None), ("client-id", Some("c"))],
                &[("producer_byte_rate", 4.0)],
            ),
            quota(&[("user", Some("u"))], &[("producer_byte_rate", 3.0)]),
            quota(
                &[("user", Some("u")), ("client-id", None)],
                &[("producer_byte_rate", 2.0)],
            ),
            quota(
                &[("user", Some("u")), ("client-id", Some("c"))],
                &[("producer_byte_rate", 1.0)],
            ),
        ];
        // Removing the most specific entity each time exposes the next one.
        for n in (1..=all.len()).rev() {
            let set = QuotaSet::new(all[..n].to_vec());
            let (_, v) = set.client(P, "u", "c").unwrap();
            assert_eq!(v, (all.len() + 1 - n) as f64, "with {n} entities");
        }
        assert!(QuotaSet::new(vec![]).client(P, "u", "c").is_none());
    }

    #[test]
    fn the_group_is_what_the_entity_names() {
        let set = QuotaSet::new(vec![quota(
            &[("user", None)],
            &[("producer_byte_rate", 9.0)],
        )]);
        let (g, _) = set.client(P, "alice", "app-1").unwrap();
        assert_eq!(
            g,
            QuotaGroup {
                user: "alice".into(),
                client_id: String::new()
            }
        );
        let set = QuotaSet::new(vec![quota(
            &[("user", Some("alice")), ("client-id", None)],
            &[("producer_byte_rate", 9.0)],
        )]);
        let (g, _) = set.client(P, "alice", "app-1").unwrap();
        assert_eq!(g.client_id, "app-1");
        assert!(set.client(P, "bob", "app-1").is_none());
    }

    #[test]
    fn a_kind_falls_through_to_the_entity_that_sets_it() {
        let set = QuotaSet::new(vec![
            quota(&[("user", Some("u"))], &[("consumer_byte_rate", 1.0)]),
            quota(&[("user", None)], &[("producer_byte_rate", 2.0)]),
        ]);
        assert_eq!(set.client(P, "u", "c").unwrap().1, 2.0);
        assert_eq!(
            set.client(QuotaKind::ConsumerByteRate, "u", "c").unwrap().1,
            1.0
        );
    }

    #[test]
    fn ip_quotas() {
        let set = QuotaSet::new(vec![
            quota(&[("ip", None)], &[("connection_creation_rate", 5.0)]),
            quota(
                &[("ip", Some("10.0.0.1"))],
                &[("connection_creation_rate", 1.0)],
            ),
        ]);
        assert_eq!(set.ip("10.0.0.1"), Some(1.0));
        assert_eq!(set.ip("10.0.0.2"), Some(5.0));
    }

    #[test]
    fn validation() {
        use QuotaError::*;
        let e = |c: &[(&str, Option<&str>)]| Entity::parse(c.iter().copied());
        assert_eq!(e(&[]), Err(Empty));
        assert_eq!(
            e(&[("group", None)]),
            Err(UnknownEntityType("group".into()))
        );
        assert_eq!(
            e(&[("user", None), ("user", Some("a"))]),
            Err(DuplicateEntityType("user".into()))
        );
        assert_eq!(e(&[("user", None), ("ip", None)]), Err(IpCombined));
        assert_eq!(e(&[("ip", Some("nope"))]), Err(BadAddress("nope".into())));
        let user = e(&[("user", Some("a"))]).unwrap();
        let ip = e(&[("ip", Some("::1"))]).unwrap();
        assert!(user.check_value("producer_byte_rate", 1024.0).is_ok());
        assert!(user.check_value("request_percentage", 12.5).is_ok());
        assert!(user.check_value("producer_byte_rate", 10.5).is_err());
        assert!(user.check_value("producer_byte_rate", 0.0).is_err());
        assert!(user.check_value("connection_creation_rate", 5.0).is_err());
        assert!(ip.check_value("connection_creation_rate", 5.0).is_ok());
        assert!(ip.check_value("producer_byte_rate", 5.0).is_err());
        assert!(user.check_value("nonsense", 5.0).is_err());
        assert_ne!(user.canonical(), ip.canonical());
        let round = Entity::from_stored(&ClientQuota {
            entity: user.to_stored(),
            values: Default::default(),
        });
        assert_eq!(round, Ok(user));
    }
}
