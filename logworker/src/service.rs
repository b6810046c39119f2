//! The internal data-plane gRPC service (`kafscale.data.v1.LogWorker`),
//! a thin adapter from tonic to `Worker`.

use crate::worker::Worker;
use kafscale_proto::data::v1 as pb;
use kafscale_proto::data::v1::log_worker_server::{LogWorker, LogWorkerServer};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// gRPC adapter around a worker.
pub struct LogWorkerService {
    worker: Arc<Worker>,
}

impl LogWorkerService {
    /// The tonic server for `worker`, with message limits large enough for
    /// maximum-size Kafka requests.
    pub fn server(worker: Arc<Worker>) -> LogWorkerServer<Self> {
        LogWorkerServer::new(Self { worker })
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

#[tonic::async_trait]
impl LogWorker for LogWorkerService {
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        Ok(Response::new(self.worker.produce(req.into_inner()).await))
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        Ok(Response::new(self.worker.fetch(req.into_inner()).await))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Ok(Response::new(
            self.worker.list_offsets(req.into_inner()).await,
        ))
    }

    async fn group(
        &self,
        req: Request<pb::GroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        Ok(Response::new(self.worker.group(req.into_inner()).await))
    }
}
