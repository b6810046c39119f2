//! The internal data-plane gRPC service (`kafscale.data.v1.LogWorker`),
//! a thin adapter from tonic to `Worker`.

use crate::groups::api::Sequenced;
use crate::worker::Worker;
use futures::stream::{BoxStream, StreamExt};
use kafscale_proto::data::v1 as pb;
use kafscale_proto::data::v1::log_worker_server::{LogWorker, LogWorkerServer};
use kafscale_proto::trace_context::{set_remote_parent, TRACE_TARGET};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The span of one data-plane call, a child of the gateway's span when the
/// request carries a trace context.
fn rpc_span<T>(method: &'static str, req: &Request<T>) -> tracing::Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "worker.rpc",
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
    );
    set_remote_parent(&span, req.metadata());
    span
}

/// gRPC adapter around a worker.
pub struct LogWorkerService {
    worker: Arc<Worker>,
}

impl LogWorkerService {
    /// The service of `worker`, to be called in this process.
    pub fn new(worker: Arc<Worker>) -> Self {
        Self { worker }
    }

    /// The tonic server for `worker`, with message limits large enough for
    /// maximum-size Kafka requests.
    pub fn server(worker: Arc<Worker>) -> LogWorkerServer<Self> {
        LogWorkerServer::new(Self::new(worker))
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

#[tonic::async_trait]
impl LogWorker for LogWorkerService {
    type ProduceStream = BoxStream<'static, Result<pb::ProduceResponse, Status>>;

    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<Self::ProduceStream>, Status> {
        let span = rpc_span("Produce", &req);
        // Offsets are assigned before the first message goes out.
        let pending = span.in_scope(|| self.worker.produce_append(req.into_inner()));
        let wait = tracing::info_span!(target: TRACE_TARGET, parent: &span, "wait_durable");
        // No "sequenced" message when a part is to be retried elsewhere: the
        // connection's next request waits for that retry (see data.proto).
        let sequenced = (!pending.refused_as_not_owner()).then_some(pb::ProduceResponse {
            partitions: Vec::new(),
            sequenced: true,
        });
        let stream =
            futures::stream::iter(sequenced.map(Ok)).chain(futures::stream::once(async move {
                // The call's span lasts until its answer.
                let _call = span;
                Ok(pending.finish().instrument(wait).await)
            }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        Ok(Response::new({
            let span = rpc_span("Fetch", &req);
            self.worker.fetch(req.into_inner()).instrument(span).await
        }))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Ok(Response::new({
            let span = rpc_span("ListOffsets", &req);
            self.worker
                .list_offsets(req.into_inner())
                .instrument(span)
                .await
        }))
    }

    async fn delete_records(
        &self,
        req: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        Ok(Response::new({
            let span = rpc_span("DeleteRecords", &req);
            self.worker
                .delete_records(req.into_inner())
                .instrument(span)
                .await
        }))
    }

    async fn partition_sizes(
        &self,
        req: Request<pb::PartitionSizesRequest>,
    ) -> Result<Response<pb::PartitionSizesResponse>, Status> {
        Ok(Response::new(self.worker.partition_sizes(req.into_inner())))
    }

    type GroupStream = BoxStream<'static, Result<pb::GroupResponse, Status>>;

    async fn group(
        &self,
        req: Request<pb::GroupRequest>,
    ) -> Result<Response<Self::GroupStream>, Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let worker = self.worker.clone();
        // Runs to completion even if the gateway goes away: group state
        // changes must not be cut off halfway.
        let span = rpc_span("Group", &req);
        let task = tokio::spawn(
            async move { worker.group(req.into_inner(), Sequenced::new(tx)).await }
                .instrument(span),
        );
        let stream = futures::stream::once(async move {
            let _ = rx.await;
            Ok(pb::GroupResponse {
                sequenced: true,
                ..Default::default()
            })
        })
        .chain(futures::stream::once(async move {
            task.await.map_err(|e| Status::internal(e.to_string()))
        }));
        Ok(Response::new(Box::pin(stream)))
    }
}
