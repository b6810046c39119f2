//! The custom resources of the operator (API group `kafscale.io`, version
//! `v1alpha1`): `KafscaleCluster` and `KafscaleTopic`. `kafscale crd` prints
//! the CustomResourceDefinitions generated from these types; the Helm chart
//! ships the same YAML (a test keeps them equal).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A KafScale cluster: gateways and log workers on S3 and etcd.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kafscale.io",
    version = "v1alpha1",
    kind = "KafscaleCluster",
    namespaced,
    status = "KafscaleClusterStatus",
    shortname = "ksc",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Gateways","type":"integer","jsonPath":".status.gateways.readyReplicas"}"#,
    printcolumn = r#"{"name":"Workers","type":"integer","jsonPath":".status.workers.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleClusterSpec {
    /// The kafscale container image.
    pub image: String,
    /// Image pull policy of every pod (Kubernetes' default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Metadata and object-key namespace (`KAFSCALE_S3_NAMESPACE`); one
    /// cluster per namespace. Default: the resource's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_namespace: Option<String>,
    /// The Kafka-protocol gateways.
    #[serde(default)]
    pub gateway: GatewaySpec,
    /// The log workers.
    #[serde(default)]
    pub worker: WorkerSpec,
    /// Where log data lives.
    pub s3: S3Spec,
    /// Where metadata lives.
    pub etcd: EtcdSpec,
    /// WAL and cache settings of the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalSpec>,
    /// Listener security of the gateways (as far as they support it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,
    /// Trace export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,
    /// Further `KAFSCALE_*` settings, passed to every pod as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// Gateways: a Deployment behind a Service on 9092.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Replicas (default 2); the HPA's when autoscaling is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Service type: ClusterIP (default), NodePort or LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// The host clients are told to connect to (default: the Service's
    /// in-cluster name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_host: Option<String>,
}

/// Log workers: a StatefulSet (stable worker ids) behind a headless Service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Replicas (default 3); the HPA's when autoscaling is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// `spread` (every worker owns partitions) or `pack` (only as many as
    /// the cluster's ingest rate needs) (`KAFSCALE_PLACEMENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
}

/// Horizontal autoscaling bounds and target.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Average CPU utilisation to keep (default 70).
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_cpu_utilization_percentage: Option<i32>,
}

/// The primary bucket and its optional cross-region read replica.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    pub bucket: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// `auto` (default: unsigned over HTTPS, signed over plain HTTP),
    /// `signed` or `unsigned`: whether PUT payloads are signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_signing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_endpoint: Option<String>,
    /// Static credentials; without them the AWS chain (IRSA, ...) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3CredentialsRef>,
}

/// A Secret holding S3 credentials.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    pub name: String,
    /// Key of the access key id (default `AWS_ACCESS_KEY_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_key: Option<String>,
    /// Key of the secret access key (default `AWS_SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_key: Option<String>,
}

/// The etcd cluster holding the metadata.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    pub endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<EtcdCredentialsRef>,
}

/// A Secret holding etcd credentials.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdCredentialsRef {
    pub name: String,
    /// Key of the user name (default `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,
    /// Key of the password (default `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
}

/// WAL and cache settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalSpec {
    /// `balanced`, `cost` or `latency` (`KAFSCALE_WAL_FLUSH_PROFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_profile: Option<String>,
    /// Tail cache bytes per worker (`KAFSCALE_CACHE_BYTES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_bytes: Option<i64>,
    /// Segment block cache bytes per worker (`KAFSCALE_SEGMENT_CACHE_BYTES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_cache_bytes: Option<i64>,
}

/// Listener security.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// `""`/`none` (every request allowed) or `acl` (`KAFSCALE_AUTHORIZER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<String>,
}

/// Trace export.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// OTLP endpoint (`KAFSCALE_OTLP_ENDPOINT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

/// What the operator observed of a cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<ComponentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<ComponentStatus>,
}

/// Replicas of one component, from its workload and from the cluster's own
/// registrations in etcd.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Replicas the workload wants.
    pub replicas: i32,
    /// Replicas whose pods are ready.
    pub ready_replicas: i32,
    /// Processes registered in the metadata store (-1: etcd unreachable).
    pub registered: i32,
}

/// A topic of a KafscaleCluster in the same namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kafscale.io",
    version = "v1alpha1",
    kind = "KafscaleTopic",
    namespaced,
    status = "KafscaleTopicStatus",
    shortname = "kst",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleTopicSpec {
    /// The KafscaleCluster (same namespace) the topic belongs to.
    pub cluster_ref: String,
    /// Topic name (default: the resource's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// Partition count; it can grow, never shrink (as in Kafka).
    pub partitions: i32,
    /// Topic configs with Kafka's names (`retention.ms`, `cleanup.policy`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
    /// `Retain` (default): deleting the resource keeps the topic and its
    /// data. `Delete`: deleting the resource deletes the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// What happens to a topic when its KafscaleTopic is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// What the operator observed of a topic.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleTopicStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the topic exists with the spec's partitions and configs).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The topic's id in the metadata store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions the topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
}

impl KafscaleTopic {
    /// The topic's name in the cluster.
    pub fn topic_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// Both CRDs as one multi-document YAML (what `kafscale crd` prints).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [KafscaleCluster::crd(), KafscaleTopic::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
