//! Test support: a fake log worker that answers wrongly on purpose, and a
//! cluster view (embedded metadata store) that routes a topic's partitions
//! to it. The worker is outside the gateway's process boundary, so faking
//! it is how the gateway's handling of bad worker answers is tested.

use crate::cluster::ClusterView;
use crate::router::{Routed, Router};
use futures::stream::{self, BoxStream, StreamExt};
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_controlplane::{EmbeddedStore, Metadata};
use kafscale_proto::data::v1 as pb;
use kafscale_proto::data::v1::log_worker_server::{LogWorker, LogWorkerServer};
use kafscale_proto::metadata::v1::{Assignment, Topic, WorkerRegistration};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// A worker whose every answer leaves out the last partition it was sent.
pub struct ShortAnswers;

/// One result per part built by `result`, then the last one dropped.
fn short_answer<P: Routed, R>(
    parts: Vec<P>,
    result: impl Fn(Option<pb::PartitionRef>) -> R,
) -> Vec<R> {
    let mut out: Vec<R> = parts
        .iter()
        .map(|p| result(p.partition_ref().cloned()))
        .collect();
    out.pop();
    out
}

#[tonic::async_trait]
impl LogWorker for ShortAnswers {
    type ProduceStream = BoxStream<'static, Result<pb::ProduceResponse, Status>>;
    type GroupStream = BoxStream<'static, Result<pb::GroupResponse, Status>>;

    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<Self::ProduceStream>, Status> {
        let results = short_answer(req.into_inner().partitions, |partition| {
            pb::ProducePartitionResult {
                partition,
                base_offset: 10,
                ..Default::default()
            }
        });
        let messages = vec![
            Ok(pb::ProduceResponse {
                partitions: Vec::new(),
                sequenced: true,
            }),
            Ok(pb::ProduceResponse {
                partitions: results,
                sequenced: false,
            }),
        ];
        Ok(Response::new(stream::iter(messages).boxed()))
    }

    async fn fetch(
        &self,
        _: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let partitions = short_answer(req.into_inner().partitions, |partition| {
            pb::ListOffsetsPartitionResult {
                partition,
                offset: 7,
                ..Default::default()
            }
        });
        Ok(Response::new(pb::ListOffsetsResponse { partitions }))
    }

    async fn delete_records(
        &self,
        _: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn partition_sizes(
        &self,
        _: Request<pb::PartitionSizesRequest>,
    ) -> Result<Response<pb::PartitionSizesResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn group(
        &self,
        _: Request<pb::GroupRequest>,
    ) -> Result<Response<Self::GroupStream>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

/// A router whose cluster view has topic `t` with `partitions` partitions,
/// all owned by a worker served by `worker` on a loopback port.
pub struct FakeCluster {
    pub router: Router,
    pub topic: Topic,
    _dir: tempfile::TempDir,
}

impl FakeCluster {
    /// Starts `worker` and the view routing to it.
    pub async fn start<W: LogWorker>(worker: W, partitions: i32) -> FakeCluster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LogWorkerServer::new(worker))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("embedded store");
        let meta = Metadata::new(Arc::new(store), "test");
        let topic = meta
            .create_topic("t", partitions, HashMap::new())
            .await
            .expect("create topic");
        meta.register_worker(
            &WorkerRegistration {
                worker_id: "fake".into(),
                grpc_addr: addr.to_string(),
                started_at_ms: 0,
                stream_epoch: 1,
                ..Default::default()
            },
            None,
        )
        .await
        .expect("register worker");
        for p in 0..partitions {
            let a = Assignment {
                worker_id: "fake".into(),
                epoch: 1,
            };
            meta.put_assignment("t", topic_uuid(&topic), p, &a)
                .await
                .expect("assign");
        }
        let view = ClusterView::start(meta).await.expect("cluster view");
        FakeCluster {
            router: Router::new(view),
            topic,
            _dir: dir,
        }
    }
}
