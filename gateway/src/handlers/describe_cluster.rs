//! DescribeCluster: the gateway as the single broker and controller.

use crate::dispatch::Ctx;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;

/// Answers DescribeCluster.
pub async fn handle(ctx: &Ctx<'_>, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    if ctx.version >= 1 {
        resp.endpoint_type = req.endpoint_type;
    }
    if let Ok(c) = ctx.view.meta().cluster_info().await {
        resp.cluster_id = StrBytes::from_string(c.cluster_id);
    }
    resp.controller_id = BrokerId(ctx.cfg.node_id);
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(ctx.cfg.node_id);
    b.host = StrBytes::from_string(ctx.cfg.advertised_host.clone());
    b.port = ctx.cfg.advertised_port;
    resp.brokers = vec![b];
    if req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations =
            ctx.authorized_operations(acl::resource::CLUSTER, acl::CLUSTER_NAME);
    }
    resp
}
