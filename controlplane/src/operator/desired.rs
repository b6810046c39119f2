//! What a `KafscaleCluster` should run, as pure functions from its spec to
//! Kubernetes objects (tested directly; the reconciler only applies them):
//!
//! - `<name>-config`: a ConfigMap of the `KAFSCALE_*` settings every pod
//!   reads (credentials stay in their Secrets, referenced per variable);
//! - `<name>-gateway`: Deployment, Service (9092), PodDisruptionBudget, and
//!   a HorizontalPodAutoscaler when autoscaling is set;
//! - `<name>-worker`: StatefulSet (the pod name is the stable worker id),
//!   headless Service (9094), PodDisruptionBudget (one worker at a time),
//!   and an HPA when autoscaling is set.
//!
//! Every object is owned by the cluster (controller owner reference), so
//! deleting the cluster deletes them. Pods carry a hash of the settings, so a
//! settings change rolls them. Workers drain through the control API in a
//! preStop hook (`kafscale ctl drain`), so a stopping worker's partitions move
//! before it stops; gateways stop accepting connections and leave readiness
//! before SIGTERM.

use super::crd::{AutoscalingSpec, KafscaleCluster};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, SecretKeySelector, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Kafka listener port of gateways.
pub const KAFKA_PORT: i32 = 9092;
/// HTTP port of every pod: metrics, probes, control API.
pub const HTTP_PORT: i32 = 9093;
/// Data-plane gRPC port of workers.
pub const GRPC_PORT: i32 = 9094;
/// Seconds a stopping worker has to drain (the preStop hook included).
pub const WORKER_TERMINATION_GRACE_SECONDS: i64 = 180;

/// Every object a cluster should have.
#[derive(Debug, Clone)]
pub struct ClusterObjects {
    pub config: ConfigMap,
    pub gateway: Deployment,
    pub gateway_service: Service,
    pub gateway_pdb: PodDisruptionBudget,
    pub gateway_hpa: Option<HorizontalPodAutoscaler>,
    pub worker: StatefulSet,
    pub worker_service: Service,
    pub worker_pdb: PodDisruptionBudget,
    pub worker_hpa: Option<HorizontalPodAutoscaler>,
}

/// Names of a cluster's objects.
pub fn config_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
/// Name of the gateway Deployment, Service, PDB and HPA.
pub fn gateway_name(cluster: &str) -> String {
    format!("{cluster}-gateway")
}
/// Name of the worker StatefulSet, headless Service, PDB and HPA.
pub fn worker_name(cluster: &str) -> String {
    format!("{cluster}-worker")
}

/// The metadata (and object key) namespace of a cluster.
pub fn metadata_namespace(c: &KafscaleCluster) -> String {
    c.spec
        .metadata_namespace
        .clone()
        .unwrap_or_else(|| c.metadata.name.clone().unwrap_or_default())
}

/// Why a cluster's objects cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("the KafscaleCluster has no name or namespace")]
    Unnamed,
    #[error("{0}")]
    Invalid(String),
}

fn labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "kafscale".into()),
        ("app.kubernetes.io/part-of".into(), "kafscale".into()),
        ("app.kubernetes.io/instance".into(), cluster.into()),
        ("app.kubernetes.io/component".into(), component.into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "kafscale-operator".into(),
        ),
    ])
}

fn selector(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".into(), cluster.into()),
        ("app.kubernetes.io/component".into(), component.into()),
    ])
}

fn owner(c: &KafscaleCluster) -> Result<OwnerReference, SpecError> {
    c.controller_owner_ref(&()).ok_or(SpecError::Unnamed)
}

fn meta(c: &KafscaleCluster, name: String, component: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: c.metadata.namespace.clone(),
        labels: Some(labels(
            c.metadata.name.as_deref().unwrap_or_default(),
            component,
        )),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// The values `KAFSCALE_S3_PAYLOAD_SIGNING` accepts.
const PAYLOAD_SIGNING: [&str; 3] = ["auto", "signed", "unsigned"];

/// Fails unless `value` (the spec field `field`) is unset or one of `allowed`.
fn check_one_of(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), SpecError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(SpecError::Invalid(format!(
            "{field} is {v:?}, not one of {allowed:?}"
        ))),
        _ => Ok(()),
    }
}

/// The `KAFSCALE_*` settings of the ConfigMap (shared by both components;
/// each process reads the ones it knows).
pub fn settings(c: &KafscaleCluster) -> Result<BTreeMap<String, String>, SpecError> {
    let s = &c.spec;
    let name = c.metadata.name.clone().ok_or(SpecError::Unnamed)?;
    let ns = c.metadata.namespace.clone().ok_or(SpecError::Unnamed)?;
    if s.etcd.endpoints.is_empty() {
        return Err(SpecError::Invalid("spec.etcd.endpoints is empty".into()));
    }
    if s.s3.bucket.is_empty() {
        return Err(SpecError::Invalid("spec.s3.bucket is empty".into()));
    }
    check_one_of(
        "spec.s3.payloadSigning",
        &s.s3.payload_signing,
        &PAYLOAD_SIGNING,
    )?;
    check_one_of(
        "spec.worker.placement",
        &s.worker.placement,
        &crate::assigner::PLACEMENT_NAMES,
    )?;
    let mut m = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    set("KAFSCALE_S3_NAMESPACE", metadata_namespace(c));
    set("KAFSCALE_ETCD_ENDPOINTS", s.etcd.endpoints.join(","));
    set("KAFSCALE_S3_BUCKET", s.s3.bucket.clone());
    set("KAFSCALE_S3_REGION", s.s3.region.clone());
    let optional = [
        ("KAFSCALE_S3_ENDPOINT", s.s3.endpoint.clone()),
        (
            "KAFSCALE_S3_PATH_STYLE",
            s.s3.path_style.map(|b| b.to_string()),
        ),
        ("KAFSCALE_S3_PAYLOAD_SIGNING", s.s3.payload_signing.clone()),
        ("KAFSCALE_S3_READ_BUCKET", s.s3.read_bucket.clone()),
        ("KAFSCALE_S3_READ_REGION", s.s3.read_region.clone()),
        ("KAFSCALE_S3_READ_ENDPOINT", s.s3.read_endpoint.clone()),
        ("KAFSCALE_PLACEMENT", s.worker.placement.clone()),
        (
            "KAFSCALE_WAL_FLUSH_PROFILE",
            s.wal.as_ref().and_then(|w| w.flush_profile.clone()),
        ),
        (
            "KAFSCALE_CACHE_BYTES",
            s.wal
                .as_ref()
                .and_then(|w| w.cache_bytes)
                .map(|b| b.to_string()),
        ),
        (
            "KAFSCALE_SEGMENT_CACHE_BYTES",
            s.wal
                .as_ref()
                .and_then(|w| w.segment_cache_bytes)
                .map(|b| b.to_string()),
        ),
        (
            "KAFSCALE_AUTHORIZER",
            s.security
                .as_ref()
                .and_then(|x| x.authorizer.clone())
                .map(|a| if a.is_empty() { "none".into() } else { a }),
        ),
        (
            "KAFSCALE_OTLP_ENDPOINT",
            s.telemetry.as_ref().and_then(|t| t.otlp_endpoint.clone()),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            set(k, v);
        }
    }
    set(
        "KAFSCALE_ADVERTISED_HOST",
        s.gateway
            .advertised_host
            .clone()
            .unwrap_or_else(|| format!("{}.{ns}.svc", gateway_name(&name))),
    );
    set("KAFSCALE_ADVERTISED_PORT", KAFKA_PORT.to_string());
    set("KAFSCALE_KAFKA_ADDR", format!("0.0.0.0:{KAFKA_PORT}"));
    set("KAFSCALE_HTTP_ADDR", format!("0.0.0.0:{HTTP_PORT}"));
    set("KAFSCALE_GRPC_ADDR", format!("0.0.0.0:{GRPC_PORT}"));
    for (k, v) in &s.env {
        if !k.starts_with("KAFSCALE_") {
            return Err(SpecError::Invalid(format!(
                "spec.env may hold only KAFSCALE_* settings, not {k}"
            )));
        }
        set(k, v.clone());
    }
    Ok(m)
}

/// A short stable hash of the settings (a pod annotation: changing the
/// settings rolls the pods).
fn settings_hash(settings: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in settings {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Credentials as per-variable Secret references.
fn credential_env(c: &KafscaleCluster) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(s) = &c.spec.s3.credentials_secret {
        env.push(secret_env(
            "KAFSCALE_S3_ACCESS_KEY",
            &s.name,
            s.access_key_id_key
                .as_deref()
                .unwrap_or("AWS_ACCESS_KEY_ID"),
        ));
        env.push(secret_env(
            "KAFSCALE_S3_SECRET_KEY",
            &s.name,
            s.secret_access_key_key
                .as_deref()
                .unwrap_or("AWS_SECRET_ACCESS_KEY"),
        ));
    }
    if let Some(s) = &c.spec.etcd.credentials_secret {
        env.push(secret_env(
            "KAFSCALE_ETCD_USERNAME",
            &s.name,
            s.username_key.as_deref().unwrap_or("username"),
        ));
        env.push(secret_env(
            "KAFSCALE_ETCD_PASSWORD",
            &s.name,
            s.password_key.as_deref().unwrap_or("password"),
        ));
    }
    env
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        ..Default::default()
    }
}

fn pre_stop(command: &str) -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["/bin/sh".into(), "-c".into(), command.into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct PodParts<'a> {
    component: &'a str,
    subcommand: &'a str,
    ports: Vec<ContainerPort>,
    extra_env: Vec<EnvVar>,
    lifecycle: Lifecycle,
    grace: i64,
    resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

fn pod(c: &KafscaleCluster, name: &str, hash: &str, p: PodParts<'_>) -> PodTemplateSpec {
    let mut env = vec![EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    env.extend(credential_env(c));
    env.extend(p.extra_env);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(name, p.component)),
            annotations: Some(BTreeMap::from([(
                "kafscale.io/settings-hash".to_string(),
                hash.to_string(),
            )])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            termination_grace_period_seconds: Some(p.grace),
            containers: vec![Container {
                name: p.component.into(),
                image: Some(c.spec.image.clone()),
                image_pull_policy: c.spec.image_pull_policy.clone(),
                args: Some(vec![p.subcommand.into()]),
                env: Some(env),
                env_from: Some(vec![EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: config_name(name),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }]),
                ports: Some(p.ports),
                liveness_probe: Some(http_probe("/healthz", 10)),
                readiness_probe: Some(http_probe("/readyz", 5)),
                lifecycle: Some(p.lifecycle),
                resources: p.resources,
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn hpa(
    c: &KafscaleCluster,
    name: String,
    component: &str,
    kind: &str,
    a: &AutoscalingSpec,
    owner: &OwnerReference,
) -> Result<HorizontalPodAutoscaler, SpecError> {
    if a.min_replicas < 1 || a.max_replicas < a.min_replicas {
        return Err(SpecError::Invalid(format!(
            "{component} autoscaling needs 1 <= minReplicas <= maxReplicas (got {} and {})",
            a.min_replicas, a.max_replicas
        )));
    }
    Ok(HorizontalPodAutoscaler {
        metadata: meta(c, name.clone(), component, owner),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: kind.into(),
                name,
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(
                            a.target_cpu_utilization_percentage.unwrap_or(70),
                        ),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn pdb(
    c: &KafscaleCluster,
    name: String,
    component: &str,
    owner: &OwnerReference,
) -> PodDisruptionBudget {
    let cluster = c.metadata.name.as_deref().unwrap_or_default();
    PodDisruptionBudget {
        metadata: meta(c, name, component, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(cluster, component)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Replicas the operator sets: the spec's (or `default`), or none at all
/// with autoscaling, so that the HPA alone owns the count (a server-side
/// apply that set it would undo every scaling decision).
fn replicas(spec: Option<i32>, auto: Option<&AutoscalingSpec>, default: i32) -> Option<i32> {
    match auto {
        Some(_) => None,
        None => Some(spec.unwrap_or(default)),
    }
}

/// Builds every object `c` should have.
pub fn cluster_objects(c: &KafscaleCluster) -> Result<ClusterObjects, SpecError> {
    let name = c.metadata.name.clone().ok_or(SpecError::Unnamed)?;
    let ns = c.metadata.namespace.clone().ok_or(SpecError::Unnamed)?;
    if c.spec.image.is_empty() {
        return Err(SpecError::Invalid("spec.image is empty".into()));
    }
    let owner = owner(c)?;
    let settings = settings(c)?;
    let hash = settings_hash(&settings);
    let (gw, wk) = (gateway_name(&name), worker_name(&name));

    let config = ConfigMap {
        metadata: meta(c, config_name(&name), "config", &owner),
        data: Some(settings),
        ..Default::default()
    };

    let g = &c.spec.gateway;
    let gateway = Deployment {
        metadata: meta(c, gw.clone(), "gateway", &owner),
        spec: Some(DeploymentSpec {
            replicas: replicas(g.replicas, g.autoscaling.as_ref(), 2),
            selector: LabelSelector {
                match_labels: Some(selector(&name, "gateway")),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: pod(
                c,
                &name,
                &hash,
                PodParts {
                    component: "gateway",
                    subcommand: "gateway",
                    ports: vec![port("kafka", KAFKA_PORT), port("http", HTTP_PORT)],
                    extra_env: Vec::new(),
                    // Leave readiness and refuse new connections, give the
                    // Service time to drop the endpoint, then SIGTERM drains
                    // the open connections.
                    lifecycle: pre_stop(&format!(
                        "kafscale ctl drain --addr 127.0.0.1:{HTTP_PORT}; sleep 5"
                    )),
                    grace: 60,
                    resources: g.resources.clone(),
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let gateway_service = Service {
        metadata: meta(c, gw.clone(), "gateway", &owner),
        spec: Some(ServiceSpec {
            type_: Some(g.service_type.clone().unwrap_or_else(|| "ClusterIP".into())),
            selector: Some(selector(&name, "gateway")),
            ports: Some(vec![ServicePort {
                name: Some("kafka".into()),
                port: KAFKA_PORT,
                target_port: Some(IntOrString::String("kafka".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let gateway_hpa = match &g.autoscaling {
        Some(a) => Some(hpa(c, gw.clone(), "gateway", "Deployment", a, &owner)?),
        None => None,
    };

    let w = &c.spec.worker;
    let worker = StatefulSet {
        metadata: meta(c, wk.clone(), "worker", &owner),
        spec: Some(StatefulSetSpec {
            replicas: replicas(w.replicas, w.autoscaling.as_ref(), 3),
            service_name: Some(wk.clone()),
            // Workers hold no volume: start and stop them in parallel; the
            // PDB and the preStop drain keep moves one worker at a time.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector(&name, "worker")),
                ..Default::default()
            },
            template: pod(
                c,
                &name,
                &hash,
                PodParts {
                    component: "worker",
                    subcommand: "logworker",
                    ports: vec![port("grpc", GRPC_PORT), port("http", HTTP_PORT)],
                    extra_env: vec![
                        EnvVar {
                            name: "KAFSCALE_WORKER_ID".into(),
                            value: Some("$(POD_NAME)".into()),
                            ..Default::default()
                        },
                        EnvVar {
                            name: "KAFSCALE_GRPC_ADVERTISED_ADDR".into(),
                            value: Some(format!("$(POD_NAME).{wk}.{ns}.svc:{GRPC_PORT}")),
                            ..Default::default()
                        },
                    ],
                    // Hand every partition to other workers before SIGTERM
                    // (refused when no other worker is left; SIGTERM then
                    // drains locally).
                    lifecycle: pre_stop(&format!(
                        "kafscale ctl drain --addr 127.0.0.1:{HTTP_PORT}"
                    )),
                    grace: WORKER_TERMINATION_GRACE_SECONDS,
                    resources: w.resources.clone(),
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let worker_service = Service {
        metadata: meta(c, wk.clone(), "worker", &owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Gateways dial workers as soon as they register.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(&name, "worker")),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: GRPC_PORT,
                target_port: Some(IntOrString::String("grpc".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let worker_hpa = match &w.autoscaling {
        Some(a) => Some(hpa(c, wk.clone(), "worker", "StatefulSet", a, &owner)?),
        None => None,
    };

    Ok(ClusterObjects {
        config,
        gateway,
        gateway_service,
        gateway_pdb: pdb(c, gw, "gateway", &owner),
        gateway_hpa,
        worker,
        worker_service,
        worker_pdb: pdb(c, wk, "worker", &owner),
        worker_hpa,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(s3: serde_json::Value) -> KafscaleCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kafscale.io/v1alpha1",
            "kind": "KafscaleCluster",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"image": "kafscale:dev", "s3": s3, "etcd": {"endpoints": ["http://etcd:2379"]}},
        }))
        .expect("a cluster")
    }

    #[test]
    fn payload_signing_is_passed_on_and_checked() {
        let base = serde_json::json!({"bucket": "b", "region": "r"});
        let plain = settings(&cluster(base.clone())).expect("valid");
        assert!(!plain.contains_key("KAFSCALE_S3_PAYLOAD_SIGNING"));
        let mut s3 = base.clone();
        s3["payloadSigning"] = "unsigned".into();
        let set = settings(&cluster(s3.clone())).expect("valid");
        assert_eq!(set["KAFSCALE_S3_PAYLOAD_SIGNING"], "unsigned");
        s3["payloadSigning"] = "off".into();
        assert!(matches!(
            settings(&cluster(s3)),
            Err(SpecError::Invalid(m)) if m.contains("payloadSigning")
        ));
    }

    #[test]
    fn placement_is_passed_on_and_checked() {
        let s3 = serde_json::json!({"bucket": "b", "region": "r"});
        let mut c = cluster(s3);
        assert!(!settings(&c)
            .expect("valid")
            .contains_key("KAFSCALE_PLACEMENT"));
        c.spec.worker.placement = Some("pack".into());
        assert_eq!(settings(&c).expect("valid")["KAFSCALE_PLACEMENT"], "pack");
        c.spec.worker.placement = Some("packed".into());
        assert!(matches!(
            settings(&c),
            Err(SpecError::Invalid(m)) if m.contains("spec.worker.placement")
        ));
    }
}
