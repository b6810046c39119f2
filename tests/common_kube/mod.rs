//! A fake Kubernetes API server for operator tests: no kube-apiserver can
//! run on these machines, so this in-process HTTP server speaks the REST API
//! for the verbs the operator's reconcilers use, and the real `kube` client
//! talks to it over loopback.
//!
//! It keeps objects as JSON by path and implements GET (object and list),
//! POST (create), PATCH (server-side apply as a deep merge, JSON merge
//! patch, JSON patch; `/status` patches the same object) and DELETE
//! (finalizers respected: the object gets a deletionTimestamp and goes once
//! its finalizers are removed; objects whose owner references name a
//! removed object go with it, as Kubernetes' garbage collector does in the
//! background). It assigns uid, resourceVersion, generation (bumped when
//! `spec` changes) and creationTimestamp. Not implemented: watches, field
//! ownership and conflicts of server-side apply, admission and schema
//! validation.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    version: u64,
}

/// A running fake API server.
pub struct FakeKube {
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// Splits a request path into (object key, is-status, is-collection).
/// Object paths end in `/<plural>/<name>`, collections in `/<plural>`.
fn parse(path: &str) -> (String, bool) {
    let path = path.trim_end_matches('/');
    match path.strip_suffix("/status") {
        Some(p) => (p.to_string(), true),
        None => (path.to_string(), false),
    }
}

fn is_collection(path: &str) -> bool {
    // /api/v1/namespaces/NS/PLURAL or /apis/G/V/namespaces/NS/PLURAL:
    // an even number of segments after the version prefix.
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix = if segs.first() == Some(&"api") { 2 } else { 3 };
    let rest = segs.len().saturating_sub(prefix);
    rest % 2 == 1
}

/// Deep merge of `patch` into `doc` (objects merge, everything else is
/// replaced; null deletes), as a stand-in for server-side apply.
fn merge(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

impl Store {
    /// Removes an object and, transitively, every object it owns.
    fn remove(&mut self, key: &str) {
        let Some(gone) = self.objects.remove(key) else {
            return;
        };
        let uid = gone["metadata"]["uid"].clone();
        let owned: Vec<String> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in owned {
            self.remove(&k);
        }
    }

    fn stamp(&mut self, obj: &mut Value, created: bool) {
        self.version += 1;
        let m = &mut obj["metadata"];
        m["resourceVersion"] = json!(self.version.to_string());
        if created {
            m["uid"] = json!(format!("uid-{}", self.version));
            m["creationTimestamp"] = json!("2026-12-06T00:00:00Z");
            m["generation"] = json!(1);
        }
    }

    fn write(&mut self, key: &str, before: Option<&Value>, mut obj: Value) -> Value {
        let created = before.is_none();
        if let Some(b) = before {
            for k in ["uid", "creationTimestamp", "generation"] {
                if obj["metadata"].get(k).is_none() {
                    obj["metadata"][k] = b["metadata"][k].clone();
                }
            }
            if b.get("spec") != obj.get("spec") {
                let g = b["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                obj["metadata"]["generation"] = json!(g);
            }
        }
        self.stamp(&mut obj, created);
        // A deleted object goes once its last finalizer is removed.
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if obj["metadata"].get("deletionTimestamp").is_some() && !finalizers {
            self.remove(key);
        } else {
            self.objects.insert(key.to_string(), obj.clone());
        }
        obj
    }
}

async fn handle(
    State(store): State<Arc<Mutex<Store>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (key, _status_sub) = parse(uri.path());
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return status(400, "BadRequest", e.to_string()),
        }
    };
    if is_collection(&key) {
        return match method {
            Method::GET => {
                let prefix = format!("{key}/");
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                    .map(|(_, v)| v.clone())
                    .collect();
                ok(json!({
                    "apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": s.version.to_string()},
                    "items": items,
                }))
            }
            Method::POST => {
                let Some(name) = body["metadata"]["name"].as_str() else {
                    return status(422, "Invalid", "metadata.name is required".into());
                };
                let k = format!("{key}/{name}");
                if s.objects.contains_key(&k) {
                    return status(409, "AlreadyExists", format!("{k} exists"));
                }
                let mut obj = body.clone();
                if let Some(ns) = namespace_of(&key) {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                let created = s.write(&k, None, obj);
                (StatusCode::CREATED, axum::Json(created)).into_response()
            }
            _ => status(405, "MethodNotAllowed", format!("{method} {key}")),
        };
    }
    let current = s.objects.get(&key).cloned();
    match method {
        Method::GET => match current {
            Some(v) => ok(v),
            None => status(404, "NotFound", format!("{key} not found")),
        },
        Method::PATCH => {
            let ctype = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let mut obj = match (&current, ctype) {
                (Some(c), _) => c.clone(),
                (None, t) if t.starts_with("application/apply-patch") => {
                    let mut o = json!({"metadata": {}});
                    if let Some(ns) = namespace_of(&key) {
                        o["metadata"]["namespace"] = json!(ns);
                    }
                    o
                }
                (None, _) => return status(404, "NotFound", format!("{key} not found")),
            };
            if ctype.starts_with("application/json-patch") {
                // Kubernetes treats a missing field as null in a `test`
                // (kube's finalizer helper relies on it); json-patch does not.
                let ops: Vec<Value> = body
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|op| {
                        let path = op["path"].as_str().unwrap_or("");
                        !(op["op"] == "test"
                            && op["value"].is_null()
                            && obj.pointer(path).is_none())
                    })
                    .collect();
                let p: json_patch::Patch = match serde_json::from_value(Value::Array(ops)) {
                    Ok(p) => p,
                    Err(e) => return status(400, "BadRequest", e.to_string()),
                };
                if let Err(e) = json_patch::patch(&mut obj, &p) {
                    return status(422, "Invalid", e.to_string());
                }
            } else {
                merge(&mut obj, &body);
            }
            let written = s.write(&key, current.as_ref(), obj);
            ok(written)
        }
        Method::DELETE => match current {
            None => status(404, "NotFound", format!("{key} not found")),
            Some(mut obj) => {
                let finalizers = obj["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if finalizers {
                    obj["metadata"]["deletionTimestamp"] = json!("2026-12-06T00:00:01Z");
                    let written = s.write(&key, Some(&obj.clone()), obj);
                    ok(written)
                } else {
                    s.remove(&key);
                    ok(
                        json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}),
                    )
                }
            }
        },
        _ => status(405, "MethodNotAllowed", format!("{method} {key}")),
    }
}

fn namespace_of(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').collect();
    segs.iter()
        .position(|s| *s == "namespaces")
        .and_then(|i| segs.get(i + 1))
        .map(|s| s.to_string())
}

impl FakeKube {
    /// Starts the server on a free loopback port.
    pub async fn start() -> FakeKube {
        let store = Arc::new(Mutex::new(Store::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API server");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKube { addr, store }
    }

    /// A `kube` client for this server (namespace `default`).
    pub fn client(&self) -> kube::Client {
        let url: axum::http::Uri = format!("http://{}", self.addr).parse().expect("url");
        let config = kube::Config::new(url);
        kube::Client::try_from(config).expect("kube client")
    }

    /// The stored object at `path` (e.g. `/apis/apps/v1/namespaces/ns/deployments/x`).
    pub fn get(&self, path: &str) -> Option<Value> {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        s.objects.get(path).cloned()
    }

    /// Merges `patch` into the stored object at `path`, as a kubelet or a
    /// controller of the real cluster would (e.g. a workload's status).
    pub fn merge(&self, path: &str, patch: Value) {
        let mut s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let before = s.objects.get(path).cloned();
        let mut obj = before
            .clone()
            .unwrap_or_else(|| panic!("no object at {path}"));
        merge(&mut obj, &patch);
        s.write(path, before.as_ref(), obj);
    }

    /// Paths of every stored object.
    pub fn paths(&self) -> Vec<String> {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        s.objects.keys().cloned().collect()
    }
}
