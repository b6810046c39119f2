//! ApiVersions: advertises exactly the APIs and versions we serve.

use crate::dispatch::{encode, Outcome, SUPPORTED};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

/// The normal response.
pub fn response() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = SUPPORTED
        .iter()
        .filter_map(|(k, _, _)| {
            let (lo, hi) = crate::dispatch::supported(*k)?;
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = lo;
            v.max_version = hi;
            Some(v)
        })
        .collect();
    r
}

/// Kafka's answer to an ApiVersions version it does not know: a v0 response
/// with UNSUPPORTED_VERSION and the supported ranges, so the client can retry.
pub fn unsupported_version(correlation_id: i32) -> Outcome {
    let mut r = response();
    r.error_code = ResponseError::UnsupportedVersion.code();
    encode(correlation_id, 0, &r)
}
