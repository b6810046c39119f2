//! ACLs with Kafka's semantics: validation of new bindings, filters for
//! DescribeAcls/DeleteAcls, and the authorization decision of Kafka's
//! `StandardAuthorizer`. Pure: storage is in [`crate::Metadata`].
//!
//! Decision rules (as in Kafka): super users may do anything; a matching DENY
//! wins over any ALLOW; ALLOW of READ, WRITE, DELETE or ALTER implies
//! DESCRIBE, ALLOW of ALTER_CONFIGS implies DESCRIBE_CONFIGS, ALL covers every
//! operation; a resource with no ACL at all is allowed only when
//! `allow_everyone_if_no_acl_found` is set.

pub use kafscale_proto::metadata::v1::AclBinding;
use prost::Message;

/// Kafka's `ResourceType` codes.
pub mod resource {
    pub const ANY: i32 = 1;
    pub const TOPIC: i32 = 2;
    pub const GROUP: i32 = 3;
    pub const CLUSTER: i32 = 4;
    pub const TRANSACTIONAL_ID: i32 = 5;
    pub const DELEGATION_TOKEN: i32 = 6;
    pub const USER: i32 = 7;
}

/// Kafka's `PatternType` codes.
pub mod pattern {
    pub const ANY: i32 = 1;
    pub const MATCH: i32 = 2;
    pub const LITERAL: i32 = 3;
    pub const PREFIXED: i32 = 4;
}

/// Kafka's `AclOperation` codes.
pub mod op {
    pub const ANY: i32 = 1;
    pub const ALL: i32 = 2;
    pub const READ: i32 = 3;
    pub const WRITE: i32 = 4;
    pub const CREATE: i32 = 5;
    pub const DELETE: i32 = 6;
    pub const ALTER: i32 = 7;
    pub const DESCRIBE: i32 = 8;
    pub const CLUSTER_ACTION: i32 = 9;
    pub const DESCRIBE_CONFIGS: i32 = 10;
    pub const ALTER_CONFIGS: i32 = 11;
    pub const IDEMPOTENT_WRITE: i32 = 12;
    pub const CREATE_TOKENS: i32 = 13;
    pub const DESCRIBE_TOKENS: i32 = 14;
}

/// Kafka's `AclPermissionType` codes.
pub mod permission {
    pub const ANY: i32 = 1;
    pub const DENY: i32 = 2;
    pub const ALLOW: i32 = 3;
}

/// The operations that apply to a resource type (Kafka's
/// `AclEntry.supportedOperations`), for "authorized operations" answers.
pub fn supported_operations(resource_type: i32) -> &'static [i32] {
    match resource_type {
        resource::TOPIC => &[
            op::READ,
            op::WRITE,
            op::CREATE,
            op::DESCRIBE,
            op::DELETE,
            op::ALTER,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
        ],
        resource::GROUP => &[op::READ, op::DESCRIBE, op::DELETE],
        resource::CLUSTER => &[
            op::CREATE,
            op::CLUSTER_ACTION,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
            op::IDEMPOTENT_WRITE,
            op::ALTER,
            op::DESCRIBE,
        ],
        resource::TRANSACTIONAL_ID => &[op::DESCRIBE, op::WRITE],
        resource::DELEGATION_TOKEN => &[op::DESCRIBE],
        resource::USER => &[op::CREATE_TOKENS, op::DESCRIBE_TOKENS],
        _ => &[],
    }
}

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The wildcard resource name, principal and host.
pub const WILDCARD: &str = "*";

/// The canonical encoding of a binding (its storage key derives from it).
pub fn canonical(b: &AclBinding) -> Vec<u8> {
    b.encode_to_vec()
}

/// Checks a binding for CreateAcls; the error is Kafka's INVALID_REQUEST
/// message.
pub fn validate(b: &AclBinding) -> Result<(), String> {
    if !(resource::TOPIC..=resource::USER).contains(&b.resource_type) {
        return Err(format!("invalid resource type {}", b.resource_type));
    }
    if !matches!(b.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
        return Err(format!("invalid pattern type {}", b.pattern_type));
    }
    if !(op::ALL..=op::DESCRIBE_TOKENS).contains(&b.operation) {
        return Err(format!("invalid operation {}", b.operation));
    }
    if !matches!(b.permission_type, permission::DENY | permission::ALLOW) {
        return Err(format!("invalid permission type {}", b.permission_type));
    }
    if b.resource_name.is_empty() {
        return Err("resource name must not be empty".into());
    }
    if b.resource_type == resource::CLUSTER && b.resource_name != CLUSTER_NAME {
        return Err(format!(
            "the only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        ));
    }
    match b.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => {
            return Err(format!(
                "principal '{}' is not of the form Type:name",
                b.principal
            ))
        }
    }
    if b.host.is_empty() {
        return Err("host must not be empty".into());
    }
    Ok(())
}

/// A DescribeAcls / DeleteAcls filter; `None` strings match anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AclFilter {
    pub resource_type: i32,
    pub resource_name: Option<String>,
    pub pattern_type: i32,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i32,
    pub permission_type: i32,
}

impl AclFilter {
    /// Checks the filter's codes; the error is Kafka's INVALID_REQUEST message.
    pub fn validate(&self) -> Result<(), String> {
        if !(resource::ANY..=resource::USER).contains(&self.resource_type) {
            return Err(format!("invalid resource type {}", self.resource_type));
        }
        if !(pattern::ANY..=pattern::PREFIXED).contains(&self.pattern_type) {
            return Err(format!("invalid pattern type {}", self.pattern_type));
        }
        if !(op::ANY..=op::DESCRIBE_TOKENS).contains(&self.operation) {
            return Err(format!("invalid operation {}", self.operation));
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission_type) {
            return Err(format!("invalid permission type {}", self.permission_type));
        }
        Ok(())
    }

    /// Whether `b` is selected by this filter. MATCH selects the bindings
    /// that apply to the named resource: the literal name, the literal
    /// wildcard and every prefix of the name.
    pub fn matches(&self, b: &AclBinding) -> bool {
        let name_ok = match (&self.resource_name, self.pattern_type) {
            (None, pattern::MATCH) | (None, pattern::ANY) => true,
            (None, p) => b.pattern_type == p,
            (Some(n), pattern::MATCH) => applies_to(b, n),
            (Some(n), pattern::ANY) => &b.resource_name == n,
            (Some(n), p) => b.pattern_type == p && &b.resource_name == n,
        };
        name_ok
            && (self.resource_type == resource::ANY || self.resource_type == b.resource_type)
            && self.principal.as_ref().is_none_or(|p| p == &b.principal)
            && self.host.as_ref().is_none_or(|h| h == &b.host)
            && (self.operation == op::ANY || self.operation == b.operation)
            && (self.permission_type == permission::ANY
                || self.permission_type == b.permission_type)
    }
}

/// Whether `b`'s resource pattern covers a resource named `name`.
fn applies_to(b: &AclBinding, name: &str) -> bool {
    match b.pattern_type {
        pattern::LITERAL => b.resource_name == name || b.resource_name == WILDCARD,
        pattern::PREFIXED => name.starts_with(&b.resource_name),
        _ => false,
    }
}

/// Whether an ALLOW of `granted` permits `wanted`.
fn allow_covers(granted: i32, wanted: i32) -> bool {
    granted == wanted
        || granted == op::ALL
        || (wanted == op::DESCRIBE
            && matches!(granted, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (wanted == op::DESCRIBE_CONFIGS && granted == op::ALTER_CONFIGS)
}

/// Who is asking: a principal ("User:alice") connected from a host (an IP).
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub principal: &'a str,
    pub host: &'a str,
}

/// The authorizer's settings.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerConfig {
    /// Principals allowed everything ("User:admin").
    pub super_users: Vec<String>,
    /// Allow access to resources that have no ACL at all.
    pub allow_everyone_if_no_acl_found: bool,
}

/// Every stored binding, grouped by resource type for lookups.
#[derive(Debug, Clone, Default)]
pub struct AclSet {
    by_type: std::collections::HashMap<i32, Vec<AclBinding>>,
    len: usize,
}

impl AclSet {
    /// A set of `bindings`.
    pub fn new(bindings: impl IntoIterator<Item = AclBinding>) -> Self {
        let mut s = Self::default();
        for b in bindings {
            s.by_type.entry(b.resource_type).or_default().push(b);
            s.len += 1;
        }
        s
    }

    /// Every binding.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.by_type.values().flatten()
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `who` may perform `operation` on the resource
    /// (`resource_type`, `name`).
    pub fn authorize(
        &self,
        cfg: &AuthorizerConfig,
        who: Requester<'_>,
        operation: i32,
        resource_type: i32,
        name: &str,
    ) -> bool {
        if cfg.super_users.iter().any(|s| s == who.principal) {
            return true;
        }
        let mut any_on_resource = false;
        let mut allowed = false;
        for b in self.by_type.get(&resource_type).into_iter().flatten() {
            if !applies_to(b, name) {
                continue;
            }
            any_on_resource = true;
            let principal_ok = b.principal == who.principal || b.principal == "User:*";
            let host_ok = b.host == who.host || b.host == WILDCARD;
            if !(principal_ok && host_ok) {
                continue;
            }
            match b.permission_type {
                permission::DENY if b.operation == operation || b.operation == op::ALL => {
                    return false
                }
                permission::ALLOW if allow_covers(b.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any_on_resource && cfg.allow_everyone_if_no_acl_found)
    }

    /// Whether `who` may perform `operation` on at least one resource of
    /// `resource_type` (Kafka's `authorizeByResourceType`): an ALLOW
    /// pattern for `who` that no DENY pattern of `who` covers.
    pub fn authorize_any(
        &self,
        cfg: &AuthorizerConfig,
        who: Requester<'_>,
        operation: i32,
        resource_type: i32,
    ) -> bool {
        if cfg.super_users.iter().any(|s| s == who.principal) {
            return true;
        }
        let mine = |b: &&AclBinding| {
            (b.principal == who.principal || b.principal == "User:*")
                && (b.host == who.host || b.host == WILDCARD)
        };
        let bindings: Vec<&AclBinding> = self
            .by_type
            .get(&resource_type)
            .into_iter()
            .flatten()
            .filter(mine)
            .collect();
        let denies: Vec<&&AclBinding> = bindings
            .iter()
            .filter(|b| {
                b.permission_type == permission::DENY
                    && (b.operation == operation || b.operation == op::ALL)
            })
            .collect();
        let deny_all = denies
            .iter()
            .any(|d| d.pattern_type == pattern::LITERAL && d.resource_name == WILDCARD);
        // Whether a DENY pattern covers every resource the ALLOW pattern `b` names.
        let denied = |b: &AclBinding| {
            deny_all
                || denies.iter().any(|d| match d.pattern_type {
                    pattern::LITERAL => {
                        b.pattern_type == pattern::LITERAL && b.resource_name == d.resource_name
                    }
                    pattern::PREFIXED => b.resource_name.starts_with(&d.resource_name),
                    _ => false,
                })
        };
        let any_allow = bindings.iter().any(|b| {
            b.permission_type == permission::ALLOW
                && allow_covers(b.operation, operation)
                && !denied(b)
        });
        // With allow-everyone, any resource without ACLs qualifies.
        any_allow || (cfg.allow_everyone_if_no_acl_found && !deny_all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: i32, name: &str, pt: i32, principal: &str, o: i32, perm: i32) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: principal.into(),
            host: "*".into(),
            operation: o,
            permission_type: perm,
        }
    }

    const ALICE: Requester<'static> = Requester {
        principal: "User:alice",
        host: "10.0.0.1",
    };

    fn strict() -> AuthorizerConfig {
        AuthorizerConfig::default()
    }

    #[test]
    fn literal_prefixed_and_wildcard_patterns_apply() {
        let set = AclSet::new([
            acl(
                resource::TOPIC,
                "orders",
                pattern::LITERAL,
                "User:alice",
                op::READ,
                permission::ALLOW,
            ),
            acl(
                resource::TOPIC,
                "logs-",
                pattern::PREFIXED,
                "User:alice",
                op::WRITE,
                permission::ALLOW,
            ),
            acl(
                resource::GROUP,
                "*",
                pattern::LITERAL,
                "User:*",
                op::READ,
                permission::ALLOW,
            ),
        ]);
        let c = strict();
        assert!(set.authorize(&c, ALICE, op::READ, resource::TOPIC, "orders"));
        assert!(!set.authorize(&c, ALICE, op::WRITE, resource::TOPIC, "orders"));
        assert!(!set.authorize(&c, ALICE, op::READ, resource::TOPIC, "orders2"));
        assert!(set.authorize(&c, ALICE, op::WRITE, resource::TOPIC, "logs-app"));
        assert!(!set.authorize(&c, ALICE, op::WRITE, resource::TOPIC, "log"));
        assert!(set.authorize(&c, ALICE, op::READ, resource::GROUP, "any-group"));
        // Groups and topics are separate namespaces.
        assert!(!set.authorize(&c, ALICE, op::READ, resource::TOPIC, "any-group"));
    }

    #[test]
    fn deny_wins_and_implied_operations_follow_kafka() {
        let set = AclSet::new([
            acl(
                resource::TOPIC,
                "t",
                pattern::LITERAL,
                "User:*",
                op::ALL,
                permission::ALLOW,
            ),
            acl(
                resource::TOPIC,
                "t",
                pattern::LITERAL,
                "User:alice",
                op::WRITE,
                permission::DENY,
            ),
            acl(
                resource::TOPIC,
                "r",
                pattern::LITERAL,
                "User:alice",
                op::READ,
                permission::ALLOW,
            ),
            acl(
                resource::TOPIC,
                "c",
                pattern::LITERAL,
                "User:alice",
                op::ALTER_CONFIGS,
                permission::ALLOW,
            ),
        ]);
        let c = strict();
        assert!(set.authorize(&c, ALICE, op::READ, resource::TOPIC, "t"));
        assert!(!set.authorize(&c, ALICE, op::WRITE, resource::TOPIC, "t"));
        // READ implies DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS.
        assert!(set.authorize(&c, ALICE, op::DESCRIBE, resource::TOPIC, "r"));
        assert!(!set.authorize(&c, ALICE, op::DESCRIBE_CONFIGS, resource::TOPIC, "r"));
        assert!(set.authorize(&c, ALICE, op::DESCRIBE_CONFIGS, resource::TOPIC, "c"));
        // A DENY of READ does not deny the DESCRIBE that READ would imply.
        let deny_read = AclSet::new([
            acl(
                resource::TOPIC,
                "d",
                pattern::LITERAL,
                "User:alice",
                op::DESCRIBE,
                permission::ALLOW,
            ),
            acl(
                resource::TOPIC,
                "d",
                pattern::LITERAL,
                "User:alice",
                op::READ,
                permission::DENY,
            ),
        ]);
        assert!(deny_read.authorize(&c, ALICE, op::DESCRIBE, resource::TOPIC, "d"));
        assert!(!deny_read.authorize(&c, ALICE, op::READ, resource::TOPIC, "d"));
    }

    #[test]
    fn hosts_super_users_and_the_no_acl_rule() {
        let mut only_host = acl(
            resource::TOPIC,
            "h",
            pattern::LITERAL,
            "User:alice",
            op::READ,
            permission::ALLOW,
        );
        only_host.host = "10.0.0.2".into();
        let set = AclSet::new([only_host]);
        let strict = strict();
        assert!(!set.authorize(&strict, ALICE, op::READ, resource::TOPIC, "h"));
        // No ACL on "free": denied unless allow_everyone_if_no_acl_found.
        assert!(!set.authorize(&strict, ALICE, op::READ, resource::TOPIC, "free"));
        let open = AuthorizerConfig {
            allow_everyone_if_no_acl_found: true,
            ..Default::default()
        };
        assert!(set.authorize(&open, ALICE, op::READ, resource::TOPIC, "free"));
        // An ACL for someone else on "h" means it is no longer open.
        assert!(!set.authorize(&open, ALICE, op::READ, resource::TOPIC, "h"));
        let sup = AuthorizerConfig {
            super_users: vec!["User:alice".into()],
            ..Default::default()
        };
        assert!(set.authorize(&sup, ALICE, op::ALTER, resource::CLUSTER, CLUSTER_NAME));
    }

    #[test]
    fn authorize_any_looks_for_an_undenied_allow() {
        let c = strict();
        let allow = acl(
            resource::TOPIC,
            "app-",
            pattern::PREFIXED,
            "User:alice",
            op::WRITE,
            permission::ALLOW,
        );
        let set = AclSet::new([allow.clone()]);
        assert!(set.authorize_any(&c, ALICE, op::WRITE, resource::TOPIC));
        assert!(!set.authorize_any(&c, ALICE, op::WRITE, resource::GROUP));
        let deny = acl(
            resource::TOPIC,
            "app",
            pattern::PREFIXED,
            "User:alice",
            op::WRITE,
            permission::DENY,
        );
        assert!(!AclSet::new([allow.clone(), deny]).authorize_any(
            &c,
            ALICE,
            op::WRITE,
            resource::TOPIC
        ));
        let deny_other = acl(
            resource::TOPIC,
            "app-x",
            pattern::LITERAL,
            "User:alice",
            op::WRITE,
            permission::DENY,
        );
        assert!(AclSet::new([allow, deny_other]).authorize_any(
            &c,
            ALICE,
            op::WRITE,
            resource::TOPIC
        ));
    }

    #[test]
    fn filters_select_like_kafka() {
        let lit = acl(
            resource::TOPIC,
            "topic",
            pattern::LITERAL,
            "User:test",
            op::READ,
            permission::ALLOW,
        );
        let pre = acl(
            resource::TOPIC,
            "to",
            pattern::PREFIXED,
            "User:test",
            op::READ,
            permission::ALLOW,
        );
        let star = acl(
            resource::TOPIC,
            "*",
            pattern::LITERAL,
            "User:x",
            op::WRITE,
            permission::DENY,
        );
        let mut f = AclFilter {
            resource_type: resource::TOPIC,
            resource_name: Some("topic".into()),
            pattern_type: pattern::LITERAL,
            principal: None,
            host: Some("*".into()),
            operation: op::ANY,
            permission_type: permission::ANY,
        };
        assert!(f.matches(&lit) && !f.matches(&pre) && !f.matches(&star));
        f.pattern_type = pattern::MATCH;
        assert!(f.matches(&lit) && f.matches(&pre) && f.matches(&star));
        f.pattern_type = pattern::ANY;
        assert!(f.matches(&lit) && !f.matches(&pre));
        f.resource_name = None;
        assert!(f.matches(&pre) && f.matches(&star));
        f.principal = Some("User:test".into());
        f.operation = op::WRITE;
        assert!(!f.matches(&lit));
        assert!(f.validate().is_ok());
        f.operation = 0;
        assert!(f.validate().is_err());
    }

    #[test]
    fn validation_rejects_what_kafka_rejects() {
        let ok = acl(
            resource::TOPIC,
            "t",
            pattern::LITERAL,
            "User:a",
            op::READ,
            permission::ALLOW,
        );
        assert!(validate(&ok).is_ok());
        for bad in [
            AclBinding {
                resource_type: resource::ANY,
                ..ok.clone()
            },
            AclBinding {
                pattern_type: pattern::MATCH,
                ..ok.clone()
            },
            AclBinding {
                operation: op::ANY,
                ..ok.clone()
            },
            AclBinding {
                permission_type: permission::ANY,
                ..ok.clone()
            },
            AclBinding {
                principal: "alice".into(),
                ..ok.clone()
            },
            AclBinding {
                resource_name: String::new(),
                ..ok.clone()
            },
            AclBinding {
                resource_type: resource::CLUSTER,
                resource_name: "c".into(),
                ..ok.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }
}
