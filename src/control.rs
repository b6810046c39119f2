//! The control API (`kafscale.control.v1`) of a `kafscale` process, served
//! as gRPC on the HTTP listener (`KAFSCALE_HTTP_ADDR`, 9093) beside
//! `/metrics`, `/healthz` and `/readyz`. A process answers for the parts it
//! runs: a log worker for its partitions, WAL and caches; a gateway for its
//! listener; `kafscale dev` for both.

use kafscale_gateway::conn::ListenerControl;
use kafscale_logworker::control::DrainError;
use kafscale_logworker::Worker;
use kafscale_proto::control::v1 as pb;
use pb::control_server::{Control, ControlServer};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// The registration lease of a process, as the control API reports it.
#[derive(Clone)]
pub struct LeaseView {
    pub id: i64,
    pub lost: watch::Receiver<bool>,
}

/// What one process exposes to the control API.
#[derive(Clone)]
pub struct ControlState {
    role: &'static str,
    id: String,
    started_at_ms: i64,
    ready: watch::Sender<bool>,
    worker: Option<Arc<Worker>>,
    gateway: Option<ListenerControl>,
    lease: Option<LeaseView>,
}

impl ControlState {
    /// The control state of a process with `role` ("dev", "logworker",
    /// "gateway", "operator"); `ready` is the flag `/readyz` reports.
    pub fn new(role: &'static str, ready: watch::Sender<bool>) -> Self {
        Self {
            role,
            id: String::new(),
            started_at_ms: kafscale_controlplane::metadata::now_ms(),
            ready,
            worker: None,
            gateway: None,
            lease: None,
        }
    }

    /// This process runs `worker`.
    pub fn with_worker(mut self, worker: Arc<Worker>) -> Self {
        self.worker = Some(worker);
        self
    }

    /// This process runs a gateway whose listener `gateway` controls.
    pub fn with_gateway(mut self, gateway: ListenerControl) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// The process's id (worker or gateway id) and registration lease.
    pub fn with_identity(mut self, id: String, lease: Option<LeaseView>) -> Self {
        self.id = id;
        self.lease = lease;
        self
    }
}

/// Where a process installs its [`ControlState`] once its parts run; the
/// control API answers UNAVAILABLE until then.
#[derive(Clone, Default)]
pub struct ControlSlot(Arc<OnceLock<ControlState>>);

impl ControlSlot {
    /// Installs the process's state (the first call wins).
    pub fn install(&self, state: ControlState) {
        let _ = self.0.set(state);
    }

    /// The tonic service answering the control API.
    pub fn service(&self) -> ControlServer<ControlService> {
        ControlServer::new(ControlService(self.clone()))
    }
}

/// The control API's gRPC service.
pub struct ControlService(ControlSlot);

impl ControlService {
    fn state(&self) -> Result<&ControlState, Status> {
        self.0
             .0
            .get()
            .ok_or_else(|| Status::unavailable("the process is still starting"))
    }
}

fn drain_status(e: DrainError) -> Status {
    match e {
        DrainError::NoOtherWorker => Status::failed_precondition(e.to_string()),
        DrainError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        DrainError::Meta(m) => Status::unavailable(m.to_string()),
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.state()?;
        let mut out = match &s.worker {
            Some(w) => w.control_status(),
            None => pb::StatusResponse::default(),
        };
        out.role = s.role.to_string();
        out.version = env!("CARGO_PKG_VERSION").to_string();
        out.id = s.id.clone();
        out.ready = *s.ready.borrow();
        out.started_at_ms = s.started_at_ms;
        out.lease = Some(match &s.lease {
            Some(l) => pb::LeaseStatus {
                lease_id: l.id,
                state: if *l.lost.borrow() { "lost" } else { "held" }.into(),
            },
            None => pb::LeaseStatus {
                lease_id: 0,
                state: "none".into(),
            },
        });
        if let Some(g) = &s.gateway {
            out.draining |= !g.accepting();
            out.gateway = Some(pb::GatewayStatus {
                connections: g.connections() as u32,
                accepting: g.accepting(),
                workers: g.workers() as u32,
            });
        }
        Ok(Response::new(out))
    }

    async fn drain(
        &self,
        _: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let s = self.state()?;
        let mut handed_over = 0;
        if let Some(w) = &s.worker {
            handed_over = w.drain_on_request().await.map_err(drain_status)? as u32;
        }
        if let Some(g) = &s.gateway {
            g.set_accepting(false);
            s.ready.send_replace(false);
            tracing::info!("drain requested: no longer accepting Kafka connections");
        }
        Ok(Response::new(pb::DrainResponse { handed_over }))
    }

    async fn undrain(
        &self,
        _: Request<pb::UndrainRequest>,
    ) -> Result<Response<pb::UndrainResponse>, Status> {
        let s = self.state()?;
        if let Some(w) = &s.worker {
            w.undrain()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        if let Some(g) = &s.gateway {
            g.set_accepting(true);
            s.ready.send_replace(true);
            tracing::info!("undrained: accepting Kafka connections");
        }
        Ok(Response::new(pb::UndrainResponse {}))
    }

    async fn flush(
        &self,
        _: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        let Some(w) = &self.state()?.worker else {
            return Err(Status::failed_precondition(
                "a gateway buffers nothing: flush a log worker",
            ));
        };
        let durable_sequence = w
            .flush()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::FlushResponse { durable_sequence }))
    }
}
