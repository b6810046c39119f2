//! The Kubernetes operator, driven through the real `kube` client against a
//! fake API server (tests/common_kube; no kube-apiserver runs here) and a
//! real etcd: a KafscaleCluster becomes its workloads, follows spec changes
//! and reports readiness from workloads and registrations; a KafscaleTopic
//! becomes a topic that a real Kafka client sees through a running cluster.
//! Also: the CRDs in deploy/ are what `kafscale crd` prints, are structural,
//! and the example manifests are valid resources of these types.

mod common;
mod common_cluster;
mod common_etcd;
mod common_kube;
mod common_s3;

use common::{consume_all, producer, wait_for};
use common_cluster::{Cluster, ClusterOptions};
use common_kube::FakeKube;
use kafscale_controlplane::operator::crd::{
    AutoscalingSpec, DeletionPolicy, EtcdSpec, KafscaleCluster, KafscaleClusterSpec, KafscaleTopic,
    KafscaleTopicSpec, S3Spec, WalSpec,
};
use kafscale_controlplane::operator::status::condition_status;
use kafscale_controlplane::operator::{cluster, topic, Context};
use kafscale_controlplane::Metadata;
use kafscale_proto::metadata::v1::{GatewayRegistration, WorkerRegistration};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "team-a";

fn cluster_spec(etcd: String, metadata_namespace: &str) -> KafscaleClusterSpec {
    KafscaleClusterSpec {
        image: "kafscale:0.1.0".into(),
        metadata_namespace: Some(metadata_namespace.into()),
        s3: S3Spec {
            bucket: "events".into(),
            region: "us-east-1".into(),
            read_bucket: Some("events-replica".into()),
            read_region: Some("eu-west-1".into()),
            ..Default::default()
        },
        etcd: EtcdSpec {
            endpoints: vec![etcd],
            credentials_secret: None,
        },
        ..Default::default()
    }
}

fn path(group_version: &str, plural: &str, name: &str) -> String {
    let root = if group_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group_version}")
    };
    format!("{root}/namespaces/{NS}/{plural}/{name}")
}

fn env_of(pod_spec: &Value, name: &str) -> Option<Value> {
    pod_spec["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

async fn reconcile_cluster(api: &Api<KafscaleCluster>, ctx: &Arc<Context>) -> KafscaleCluster {
    let c = api.get("demo").await.expect("get cluster");
    cluster::reconcile(Arc::new(c), ctx.clone())
        .await
        .expect("reconcile cluster");
    api.get("demo").await.expect("get cluster")
}

fn ready(c: &KafscaleCluster) -> Option<String> {
    let s = c.status.as_ref()?;
    condition_status(&s.conditions, "Ready").map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_becomes_its_workloads_follows_changes_and_reports_readiness() {
    let etcd = common_etcd::Etcd::start().await;
    let kube = FakeKube::start().await;
    let client = kube.client();
    let ctx = Context::new(client.clone());
    let api: Api<KafscaleCluster> = Api::namespaced(client.clone(), NS);
    let mut c = KafscaleCluster::new("demo", cluster_spec(etcd.endpoint(), "demo-meta"));
    c.spec.wal = Some(WalSpec {
        flush_profile: Some("cost".into()),
        ..Default::default()
    });
    api.create(&PostParams::default(), &c)
        .await
        .expect("create");

    let c = reconcile_cluster(&api, &ctx).await;
    let uid = c.metadata.uid.clone().expect("uid");
    // The objects, each owned by the cluster.
    let objects = [
        path("v1", "configmaps", "demo-config"),
        path("apps/v1", "deployments", "demo-gateway"),
        path("v1", "services", "demo-gateway"),
        path("policy/v1", "poddisruptionbudgets", "demo-gateway"),
        path("apps/v1", "statefulsets", "demo-worker"),
        path("v1", "services", "demo-worker"),
        path("policy/v1", "poddisruptionbudgets", "demo-worker"),
    ];
    for p in &objects {
        let o = kube.get(p).unwrap_or_else(|| panic!("{p} not created"));
        let owner = &o["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], json!(uid), "{p} not owned by the cluster");
        assert_eq!(owner["kind"], "KafscaleCluster");
        assert_eq!(owner["controller"], true);
    }
    let hpa = path("autoscaling/v2", "horizontalpodautoscalers", "demo-worker");
    assert!(kube.get(&hpa).is_none(), "an HPA without autoscaling");
    let config = kube.get(&objects[0]).expect("config");
    let data = &config["data"];
    assert_eq!(data["KAFSCALE_S3_BUCKET"], "events");
    assert_eq!(data["KAFSCALE_S3_READ_BUCKET"], "events-replica");
    assert_eq!(data["KAFSCALE_S3_READ_REGION"], "eu-west-1");
    assert_eq!(data["KAFSCALE_S3_NAMESPACE"], "demo-meta");
    assert_eq!(data["KAFSCALE_ETCD_ENDPOINTS"], json!(etcd.endpoint()));
    assert_eq!(data["KAFSCALE_WAL_FLUSH_PROFILE"], "cost");
    assert_eq!(data["KAFSCALE_ADVERTISED_HOST"], "demo-gateway.team-a.svc");
    let gw = kube.get(&objects[1]).expect("gateway");
    assert_eq!(gw["spec"]["replicas"], 2);
    let gw_pod = &gw["spec"]["template"]["spec"];
    assert_eq!(gw_pod["containers"][0]["image"], "kafscale:0.1.0");
    assert_eq!(gw_pod["containers"][0]["args"], json!(["gateway"]));
    assert_eq!(
        gw_pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    let svc = kube.get(&objects[2]).expect("gateway service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9092);
    let wk = kube.get(&objects[4]).expect("workers");
    assert_eq!(wk["spec"]["replicas"], 3);
    assert_eq!(wk["spec"]["serviceName"], "demo-worker");
    let wk_pod = &wk["spec"]["template"]["spec"];
    assert_eq!(wk_pod["containers"][0]["args"], json!(["logworker"]));
    let pre_stop = wk_pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"].to_string();
    assert!(pre_stop.contains("kafscale ctl drain"), "{pre_stop}");
    assert_eq!(
        env_of(wk_pod, "KAFSCALE_WORKER_ID").expect("worker id")["value"],
        "$(POD_NAME)"
    );
    let headless = kube.get(&objects[5]).expect("worker service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["ports"][0]["port"], 9094);
    // Status: nothing runs yet.
    let s = c.status.clone().expect("status");
    assert_eq!(s.observed_generation, c.metadata.generation);
    assert_eq!(ready(&c).as_deref(), Some("False"));
    assert_eq!(condition_status(&s.conditions, "Degraded"), Some("True"));
    let hash_before =
        wk["spec"]["template"]["metadata"]["annotations"]["kafscale.io/settings-hash"].clone();

    // Spec changes reach the workloads: replicas, image, settings (which
    // roll the pods), autoscaling.
    let patch = json!({"spec": {
        "image": "kafscale:0.2.0",
        "gateway": {"replicas": 4},
        "worker": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}},
        "wal": {"flushProfile": "latency"},
    }});
    api.patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch spec");
    let c = reconcile_cluster(&api, &ctx).await;
    let gw = kube.get(&objects[1]).expect("gateway");
    assert_eq!(gw["spec"]["replicas"], 4);
    assert_eq!(
        gw["spec"]["template"]["spec"]["containers"][0]["image"],
        "kafscale:0.2.0"
    );
    let wk = kube.get(&objects[4]).expect("workers");
    assert_ne!(
        wk["spec"]["template"]["metadata"]["annotations"]["kafscale.io/settings-hash"], hash_before,
        "a settings change does not roll the pods"
    );
    assert_eq!(
        kube.get(&objects[0]).expect("config")["data"]["KAFSCALE_WAL_FLUSH_PROFILE"],
        "latency"
    );
    let h = kube.get(&hpa).expect("worker HPA");
    assert_eq!(h["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
    assert_eq!(h["spec"]["scaleTargetRef"]["name"], "demo-worker");
    assert_eq!(
        (
            h["spec"]["minReplicas"].clone(),
            h["spec"]["maxReplicas"].clone()
        ),
        (json!(2), json!(6))
    );
    assert_eq!(
        c.status.as_ref().and_then(|s| s.observed_generation),
        c.metadata.generation
    );

    // Workloads become ready and the processes register: Ready.
    let gen_of = |p: &str| kube.get(p).expect("workload")["metadata"]["generation"].clone();
    kube.merge(&objects[1], json!({"status": {"replicas": 4, "readyReplicas": 4, "updatedReplicas": 4, "observedGeneration": gen_of(&objects[1])}}));
    kube.merge(&objects[4], json!({"status": {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "observedGeneration": gen_of(&objects[4])}}));
    let meta = Metadata::new(Arc::new(etcd.store().await), "demo-meta");
    for i in 0..3 {
        meta.register_worker(
            &WorkerRegistration {
                worker_id: format!("demo-worker-{i}"),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("register worker");
    }
    for i in 0..4 {
        meta.register_gateway(
            &GatewayRegistration {
                gateway_id: format!("g{i}"),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("register gateway");
    }
    let c = reconcile_cluster(&api, &ctx).await;
    assert_eq!(ready(&c).as_deref(), Some("True"), "{:?}", c.status);
    let s = c.status.clone().expect("status");
    assert_eq!(
        s.workers.as_ref().map(|w| (w.ready_replicas, w.registered)),
        Some((3, 3))
    );
    assert_eq!(
        s.gateways
            .as_ref()
            .map(|g| (g.ready_replicas, g.registered)),
        Some((4, 4))
    );
    assert_eq!(
        condition_status(&s.conditions, "Progressing"),
        Some("False")
    );

    // A worker pod stops being ready: not Ready, Progressing.
    kube.merge(&objects[4], json!({"status": {"readyReplicas": 2}}));
    let c = reconcile_cluster(&api, &ctx).await;
    assert_eq!(ready(&c).as_deref(), Some("False"));
    assert_eq!(
        condition_status(&c.status.expect("status").conditions, "Progressing"),
        Some("True")
    );

    // Autoscaling off again: the autoscaler goes.
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"worker": {"autoscaling": null}}})),
    )
    .await
    .expect("patch spec");
    reconcile_cluster(&api, &ctx).await;
    assert!(kube.get(&hpa).is_none(), "the HPA outlived autoscaling");

    // An invalid spec is reported, not applied.
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"etcd": {"endpoints": []}}})),
    )
    .await
    .expect("patch spec");
    let c = reconcile_cluster(&api, &ctx).await;
    let degraded = c
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert_eq!(
        kube.get(&objects[0]).expect("config")["data"]["KAFSCALE_ETCD_ENDPOINTS"],
        json!(etcd.endpoint()),
        "an invalid spec changed the settings"
    );

    // Deleting the cluster deletes everything it owns (through the owner
    // references, by Kubernetes' garbage collector; the fake does the same).
    api.delete("demo", &DeleteParams::default())
        .await
        .expect("delete");
    let left: Vec<String> = kube
        .paths()
        .into_iter()
        .filter(|p| p.contains("/namespaces/team-a/"))
        .collect();
    assert!(left.is_empty(), "left after deleting the cluster: {left:?}");
}

async fn reconcile_topic(
    api: &Api<KafscaleTopic>,
    ctx: &Arc<Context>,
    name: &str,
) -> Option<KafscaleTopic> {
    // The first reconcile of a new resource adds the finalizer only.
    for _ in 0..2 {
        let t = api.get_opt(name).await.expect("get topic")?;
        topic::reconcile(Arc::new(t), ctx.clone())
            .await
            .expect("reconcile topic");
    }
    api.get_opt(name).await.expect("get topic")
}

fn topic_ready(t: &KafscaleTopic) -> (String, String) {
    let c = t
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("Ready condition");
    (c.status.clone(), c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_resource_creates_a_topic_that_kafka_clients_see() {
    let c = Cluster::start(ClusterOptions {
        workers: 1,
        gateways: 1,
        ..Default::default()
    })
    .await;
    let kube = FakeKube::start().await;
    let client = kube.client();
    let ctx = Context::new(client.clone());
    let clusters: Api<KafscaleCluster> = Api::namespaced(client.clone(), NS);
    let topics: Api<KafscaleTopic> = Api::namespaced(client.clone(), NS);
    clusters
        .create(
            &PostParams::default(),
            &KafscaleCluster::new("demo", cluster_spec(c.etcd.endpoint(), &c.namespace)),
        )
        .await
        .expect("create cluster");
    let spec = |partitions| KafscaleTopicSpec {
        cluster_ref: "demo".into(),
        topic_name: None,
        partitions,
        configs: [("retention.ms".to_string(), "3600000".to_string())].into(),
        deletion_policy: None,
    };
    topics
        .create(
            &PostParams::default(),
            &KafscaleTopic::new("orders", spec(3)),
        )
        .await
        .expect("create topic");
    let t = reconcile_topic(&topics, &ctx, "orders")
        .await
        .expect("topic resource");
    assert_eq!(topic_ready(&t), ("True".into(), "TopicReady".into()));
    assert_eq!(t.status.as_ref().and_then(|s| s.partitions), Some(3));
    assert_eq!(
        t.metadata.finalizers.as_deref(),
        Some(&["kafscale.io/topic".to_string()][..])
    );

    // A real client sees it and uses it.
    let meta = c.meta().await;
    let stored = meta
        .get_topic("orders")
        .await
        .expect("get")
        .expect("topic in etcd");
    assert_eq!(
        stored.configs.get("retention.ms").map(String::as_str),
        Some("3600000")
    );
    c.wait_all_assigned(Duration::from_secs(30)).await;
    let p = producer(&c.bootstrap(0), &[]);
    for i in 0..3 {
        p.send(
            FutureRecord::<(), _>::to("orders")
                .payload("o")
                .partition(i),
            Duration::from_secs(30),
        )
        .await
        .expect("produce to the operator's topic");
    }
    let b = c.bootstrap(0);
    let (_, records) =
        tokio::task::spawn_blocking(move || consume_all(&b, "orders", 3, Duration::from_secs(30)))
            .await
            .expect("consume");
    assert_eq!(records.values().map(Vec::len).sum::<usize>(), 3);

    // It grows; it never shrinks; a bad config changes nothing.
    topics
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"partitions": 5}})),
        )
        .await
        .expect("grow");
    reconcile_topic(&topics, &ctx, "orders").await;
    let admin = common::admin(&c.bootstrap(0));
    tokio::task::block_in_place(|| {
        futures::executor::block_on(wait_for(
            "5 partitions seen by a client",
            Duration::from_secs(30),
            || {
                let n = admin
                    .inner()
                    .fetch_metadata(None, Duration::from_secs(5))
                    .map_err(|e| e.to_string())?
                    .topics()
                    .iter()
                    .find(|t| t.name() == "orders")
                    .map(|t| t.partitions().len());
                (n == Some(5))
                    .then_some(())
                    .ok_or(format!("{n:?} partitions"))
            },
        ))
    });
    topics
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"partitions": 2}})),
        )
        .await
        .expect("shrink");
    let t = reconcile_topic(&topics, &ctx, "orders")
        .await
        .expect("topic");
    assert_eq!(topic_ready(&t), ("False".into(), "CannotShrink".into()));
    topics
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"partitions": 5, "configs": {"segment.bytes": "-5"}}})),
        )
        .await
        .expect("bad config");
    let t = reconcile_topic(&topics, &ctx, "orders")
        .await
        .expect("topic");
    assert_eq!(topic_ready(&t), ("False".into(), "InvalidConfig".into()));
    let stored = meta.get_topic("orders").await.expect("get").expect("topic");
    assert!(
        !stored.configs.contains_key("segment.bytes"),
        "an invalid config was stored"
    );

    // Deleting a Retain topic keeps the topic; a Delete topic goes with it.
    topics
        .delete("orders", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        reconcile_topic(&topics, &ctx, "orders").await.is_none(),
        "finalizer not removed"
    );
    assert!(
        meta.get_topic("orders").await.expect("get").is_some(),
        "Retain deleted the topic"
    );
    let mut doomed = spec(1);
    doomed.deletion_policy = Some(DeletionPolicy::Delete);
    topics
        .create(
            &PostParams::default(),
            &KafscaleTopic::new("scratch", doomed),
        )
        .await
        .expect("create topic");
    reconcile_topic(&topics, &ctx, "scratch").await;
    assert!(meta.get_topic("scratch").await.expect("get").is_some());
    topics
        .delete("scratch", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(reconcile_topic(&topics, &ctx, "scratch").await.is_none());
    assert!(
        meta.get_topic("scratch").await.expect("get").is_none(),
        "Delete kept the topic"
    );
}

/// Every schema node of a structural schema has a type (or says it keeps
/// unknown fields or is int-or-string), and no node uses $ref.
fn assert_structural(schema: &Value, at: &str) {
    let obj = schema
        .as_object()
        .unwrap_or_else(|| panic!("{at}: not an object"));
    assert!(!obj.contains_key("$ref"), "{at}: $ref is not allowed");
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-int-or-string") == Some(&json!(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    assert!(typed, "{at}: no type: {schema}");
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            assert_structural(v, &format!("{at}.{k}"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{at}[]"));
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(extra, &format!("{at}{{}}"));
    }
}

#[test]
fn the_chart_ships_the_crds_kafscale_crd_prints_and_they_are_structural() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .arg("crd")
        .output()
        .expect("kafscale crd");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/helm/kafscale-operator/crds/kafscale-crds.yaml"
    ))
    .expect("read chart CRDs");
    assert_eq!(
        shipped, printed,
        "deploy/helm/kafscale-operator/crds/kafscale-crds.yaml is stale: regenerate it with `kafscale crd`"
    );
    let mut kinds = Vec::new();
    for crd in yaml_documents(&printed) {
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(crd["spec"]["group"], "kafscale.io");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["subresources"]["status"], json!({}));
        assert_structural(&version["schema"]["openAPIV3Schema"], "schema");
        kinds.push(
            crd["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(kinds, ["KafscaleCluster", "KafscaleTopic"]);
}

/// The documents of a multi-document YAML text, as JSON values.
fn yaml_documents(text: &str) -> Vec<Value> {
    text.split("\n---")
        .map(|d| d.trim_start_matches("---"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| {
            serde_yaml::from_str::<Value>(d).unwrap_or_else(|e| panic!("invalid YAML ({e}): {d}"))
        })
        .collect()
}

#[test]
fn the_charts_plain_files_parse() {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/kafscale-operator");
    let read = |f: &str| std::fs::read_to_string(format!("{chart}/{f}")).expect("chart file");
    let meta = yaml_documents(&read("Chart.yaml"));
    assert_eq!(meta[0]["name"], "kafscale-operator");
    assert_eq!(meta[0]["apiVersion"], "v2");
    let values = yaml_documents(&read("values.yaml"));
    assert!(values[0]["image"]["repository"].is_string());
    assert!(values[0].get("watchNamespace").is_some());
}

/// A chart template as plain YAML: lines that are only a template directive
/// go (a top-level `else` starts a new document, so both branches parse;
/// nested branches merge, later keys overwriting), and every
/// inline `{{ ... }}` becomes a placeholder scalar. What Helm renders is not
/// checked (Helm is not installable here), but the YAML around the
/// directives is.
fn template_skeleton(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1 {
            // Only a top-level `else` switches between whole documents.
            let top_level = !line.starts_with(char::is_whitespace);
            let is_else = t
                .trim_start_matches("{{")
                .trim_start_matches('-')
                .trim_start()
                .starts_with("else");
            if top_level && is_else {
                out.push_str("---\n");
            }
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            out.push('x');
            rest = rest[start..]
                .find("}}")
                .map_or("", |end| &rest[start + end + 2..]);
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

#[test]
fn every_chart_template_parses_around_its_directives() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/helm/kafscale-operator/templates"
    );
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(dir).expect("templates") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in yaml_documents(&template_skeleton(&text)) {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{path:?}: {doc}"
            );
            kinds.push(doc["kind"].as_str().unwrap_or_default().to_string());
        }
    }
    kinds.sort();
    for kind in [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "PodMonitor",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} in the chart: {kinds:?}"
        );
    }
}

/// The chart's PodMonitor (podmonitor.yaml) as plain YAML.
fn pod_monitor() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/helm/kafscale-operator/templates/podmonitor.yaml"
    );
    let text = std::fs::read_to_string(path).expect("podmonitor.yaml");
    let docs = yaml_documents(&template_skeleton(&text));
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["kind"], "PodMonitor");
    docs[0].clone()
}

#[test]
fn the_pod_monitor_selects_the_gateway_and_worker_pods_and_their_http_port() {
    let monitor = pod_monitor();
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
        .clone();
    assert!(!selector.is_empty());
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = endpoint["port"].as_str().expect("a port name");

    let mut c = KafscaleCluster::new("demo", cluster_spec("http://etcd:2379".into(), "demo"));
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some("u1".into());
    let o = kafscale_controlplane::operator::desired::cluster_objects(&c).expect("objects");
    let gateway = serde_json::to_value(&o.gateway.spec.expect("spec").template).expect("json");
    let worker = serde_json::to_value(&o.worker.spec.expect("spec").template).expect("json");
    for (component, template) in [("gateway", gateway), ("worker", worker)] {
        let labels = &template["metadata"]["labels"];
        for (k, v) in &selector {
            assert_eq!(&labels[k], v, "{component} pods lack the label {k}={v}");
        }
        let ports = template["spec"]["containers"][0]["ports"]
            .as_array()
            .expect("ports");
        let http = ports
            .iter()
            .find(|p| p["name"] == port)
            .unwrap_or_else(|| panic!("{component} pods have no port named {port}: {ports:?}"));
        assert_eq!(
            http["containerPort"],
            kafscale_controlplane::operator::desired::HTTP_PORT
        );
        // Every relabeling reads a label the pods carry, so `component`
        // and `kafscale_cluster` (the dashboard's filters) get values.
        for r in endpoint["relabelings"].as_array().expect("relabelings") {
            for source in r["sourceLabels"].as_array().expect("sourceLabels") {
                let source = source.as_str().expect("a label");
                let pod_label = source
                    .strip_prefix("__meta_kubernetes_pod_label_")
                    .unwrap_or_else(|| panic!("not a pod label: {source}"));
                let value = labels
                    .as_object()
                    .expect("labels")
                    .iter()
                    .find(|(k, _)| k.replace(['.', '/', '-'], "_") == pod_label)
                    .map(|(_, v)| v.clone());
                assert!(
                    value.is_some(),
                    "{component} pods have no label for {source}"
                );
                if r["targetLabel"] == "component" {
                    assert_eq!(value, Some(Value::from(component)));
                }
                if r["targetLabel"] == "kafscale_cluster" {
                    assert_eq!(value, Some(Value::from("demo")));
                }
            }
        }
    }
}

#[test]
fn example_manifests_parse_into_the_resource_types() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut seen = (0, 0);
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for v in yaml_documents(&text) {
            assert!(
                v["apiVersion"].is_string() && v["kind"].is_string(),
                "{path:?}: {v}"
            );
            match v["kind"].as_str() {
                Some("KafscaleCluster") => {
                    let c: KafscaleCluster = serde_json::from_value(v.clone())
                        .unwrap_or_else(|e| panic!("{path:?}: not a KafscaleCluster: {e}"));
                    assert!(!c.spec.image.is_empty() && !c.spec.etcd.endpoints.is_empty());
                    seen.0 += 1;
                }
                Some("KafscaleTopic") => {
                    let _: KafscaleTopic = serde_json::from_value(v.clone())
                        .unwrap_or_else(|e| panic!("{path:?}: not a KafscaleTopic: {e}"));
                    seen.1 += 1;
                }
                _ => {}
            }
        }
    }
    assert!(seen.0 >= 2 && seen.1 >= 1, "examples: {seen:?}");
}

#[test]
fn autoscaling_leaves_the_replica_count_to_the_autoscaler() {
    let mut c = KafscaleCluster::new("demo", cluster_spec("http://etcd:2379".into(), "demo"));
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some("u1".into());
    c.spec.gateway.autoscaling = Some(AutoscalingSpec {
        min_replicas: 2,
        max_replicas: 8,
        target_cpu_utilization_percentage: Some(60),
    });
    let o = kafscale_controlplane::operator::desired::cluster_objects(&c).expect("objects");
    assert_eq!(o.gateway.spec.as_ref().and_then(|s| s.replicas), None);
    assert_eq!(o.worker.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let hpa = o.gateway_hpa.expect("gateway HPA");
    let target = hpa.spec.expect("spec").metrics.expect("metrics")[0]
        .resource
        .clone()
        .expect("resource")
        .target
        .average_utilization;
    assert_eq!(target, Some(60));
    // Bounds that make no sense are refused, not applied.
    c.spec.gateway.autoscaling = Some(AutoscalingSpec {
        min_replicas: 5,
        max_replicas: 2,
        target_cpu_utilization_percentage: None,
    });
    assert!(kafscale_controlplane::operator::desired::cluster_objects(&c).is_err());
}
