//! DescribeAcls, CreateAcls and DeleteAcls v0: v1 without resource pattern
//! types. Every pattern of a v0 request is LITERAL (Kafka's default for the
//! field v1 added), so a v0 filter matches only literal bindings and every
//! binding a v0 answer lists is literal: the v0 answers simply leave the
//! pattern type out.

use super::wire::{Reader, WireError, Writer};
use super::{at, respond};
use crate::dispatch::{encode, Ctx, Outcome};
use crate::handlers::acls;
use bytes::{BufMut, Bytes};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::*;
use kafscale_controlplane::acl::pattern;

/// The six fields of a v0 ACL filter, in wire order (v1 inserts the
/// pattern type after the resource name).
struct Filter {
    resource_type: i8,
    resource_name: Option<kafka_protocol::protocol::StrBytes>,
    principal: Option<kafka_protocol::protocol::StrBytes>,
    host: Option<kafka_protocol::protocol::StrBytes>,
    operation: i8,
    permission_type: i8,
}

fn read_filter(r: &mut Reader<'_>) -> Result<Filter, WireError> {
    Ok(Filter {
        resource_type: r.i8()?,
        resource_name: r.nullable_string()?,
        principal: r.nullable_string()?,
        host: r.nullable_string()?,
        operation: r.i8()?,
        permission_type: r.i8()?,
    })
}

/// A v1 filter (DescribeAcls request or DeleteAcls filter: two types with
/// the same fields) of `$t` from a v0 [`Filter`], pattern type LITERAL.
macro_rules! v1_filter {
    ($t:ty, $f:expr) => {{
        let f: Filter = $f;
        let mut d = <$t>::default();
        d.resource_type_filter = f.resource_type;
        d.resource_name_filter = f.resource_name;
        d.pattern_type_filter = pattern::LITERAL as i8;
        d.principal_filter = f.principal;
        d.host_filter = f.host;
        d.operation = f.operation;
        d.permission_type = f.permission_type;
        d
    }};
}

/// Reads a DescribeAcls v0 request as v1.
pub fn read_describe(body: &mut Bytes) -> Result<DescribeAclsRequest, WireError> {
    let f = read_filter(&mut Reader::new(body))?;
    Ok(v1_filter!(DescribeAclsRequest, f))
}

/// Reads a CreateAcls v0 request as v1.
pub fn read_create(body: &mut Bytes) -> Result<CreateAclsRequest, WireError> {
    let mut r = Reader::new(body);
    let mut req = CreateAclsRequest::default();
    // Smallest creation: 3 one-byte fields and 3 empty strings.
    req.creations = r.array(9, |r| {
        let mut c = AclCreation::default();
        c.resource_type = r.i8()?;
        c.resource_name = r.string()?;
        c.resource_pattern_type = pattern::LITERAL as i8;
        c.principal = r.string()?;
        c.host = r.string()?;
        c.operation = r.i8()?;
        c.permission_type = r.i8()?;
        Ok(c)
    })?;
    Ok(req)
}

/// Reads a DeleteAcls v0 request as v1.
pub fn read_delete(body: &mut Bytes) -> Result<DeleteAclsRequest, WireError> {
    let mut r = Reader::new(body);
    let mut req = DeleteAclsRequest::default();
    req.filters = r.array(9, |r| Ok(v1_filter!(DeleteAclsFilter, read_filter(r)?)))?;
    Ok(req)
}

fn malformed(api: &str, e: WireError) -> Outcome {
    tracing::warn!(error = %e, api, "malformed v0 request");
    Outcome::Close
}

/// DescribeAcls v0.
pub async fn describe(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let req = match read_describe(body) {
        Ok(r) => r,
        Err(e) => return malformed("DescribeAcls", e),
    };
    let resp = acls::describe(&at(ctx, 1), req).await;
    respond(cid, |out| {
        out.put_i32(resp.throttle_time_ms);
        out.put_i16(resp.error_code);
        out.put_str(resp.error_message.as_deref());
        out.put_count(resp.resources.len());
        for res in &resp.resources {
            out.put_i8(res.resource_type);
            out.put_str(Some(&res.resource_name));
            out.put_count(res.acls.len());
            for a in &res.acls {
                out.put_str(Some(&a.principal));
                out.put_str(Some(&a.host));
                out.put_i8(a.operation);
                out.put_i8(a.permission_type);
            }
        }
    })
}

/// CreateAcls v0: its answer has v1's format.
pub async fn create(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    match read_create(body) {
        Ok(req) => encode(cid, 1, &acls::create(&at(ctx, 1), req).await),
        Err(e) => malformed("CreateAcls", e),
    }
}

/// DeleteAcls v0.
pub async fn delete(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let req = match read_delete(body) {
        Ok(r) => r,
        Err(e) => return malformed("DeleteAcls", e),
    };
    let resp = acls::delete(&at(ctx, 1), req).await;
    respond(cid, |out| {
        out.put_i32(resp.throttle_time_ms);
        out.put_count(resp.filter_results.len());
        for fr in &resp.filter_results {
            out.put_i16(fr.error_code);
            out.put_str(fr.error_message.as_deref());
            out.put_count(fr.matching_acls.len());
            for m in &fr.matching_acls {
                out.put_i16(m.error_code);
                out.put_str(m.error_message.as_deref());
                out.put_i8(m.resource_type);
                out.put_str(Some(&m.resource_name));
                out.put_str(Some(&m.principal));
                out.put_str(Some(&m.host));
                out.put_i8(m.operation);
                out.put_i8(m.permission_type);
            }
        }
    })
}
