//! DescribeUserScramCredentials and AlterUserScramCredentials: the SCRAM
//! credentials SASL authenticates against, kept in the metadata store.
//! Describing needs DESCRIBE on the cluster, altering ALTER, as in Kafka.
//! Upsertions carry a salted password (the client salts and hashes), from
//! which only StoredKey and ServerKey are kept.

use crate::auth::scram::{Mechanism, DEFAULT_ITERATIONS, MAX_ITERATIONS};
use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl::op;
use std::collections::{BTreeMap, HashMap};

fn message(s: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

/// Answers DescribeUserScramCredentials.
pub async fn describe(
    ctx: &Ctx<'_>,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let mut resp = DescribeUserScramCredentialsResponse::default();
    if !ctx.allowed_on_cluster(op::DESCRIBE) {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        return resp;
    }
    let stored = match ctx.view.meta().list_scram_credentials().await {
        Ok(s) => s,
        Err(e) => {
            resp.error_code = e.kafka_code();
            resp.error_message = message(&e.to_string());
            return resp;
        }
    };
    let mut by_user: BTreeMap<String, Vec<CredentialInfo>> = BTreeMap::new();
    for c in stored {
        let mut info = CredentialInfo::default();
        info.mechanism = c.mechanism as i8;
        info.iterations = c.iterations;
        by_user.entry(c.user).or_default().push(info);
    }
    let names: Vec<String> = match &req.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => by_user.keys().cloned().collect(),
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for n in &names {
        *seen.entry(n.as_str()).or_default() += 1;
    }
    for n in &names {
        let mut r = DescribeUserScramCredentialsResult::default();
        r.user = StrBytes::from_string(n.clone());
        if seen.get(n.as_str()).copied().unwrap_or(0) > 1 {
            r.error_code = ResponseError::DuplicateResource.code();
            r.error_message = message(
                "Cannot describe SCRAM credentials for the same user twice in a single request",
            );
        } else if let Some(infos) = by_user.get(n) {
            r.credential_infos = infos.clone();
        } else {
            r.error_code = ResponseError::ResourceNotFound.code();
            r.error_message = message("Attempt to describe a user credential that does not exist");
        }
        resp.results.push(r);
    }
    resp
}

/// Answers AlterUserScramCredentials: one result per user named, the
/// user's alterations applied only if all of them are valid.
pub async fn alter(
    ctx: &Ctx<'_>,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut resp = AlterUserScramCredentialsResponse::default();
    let allowed = ctx.allowed_on_cluster(op::ALTER);
    let meta = ctx.view.meta();
    // (user, mechanism) pairs named more than once are refused.
    let mut count: HashMap<(String, i8), usize> = HashMap::new();
    for (u, m) in req
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism))
        .chain(
            req.upsertions
                .iter()
                .map(|u| (u.name.to_string(), u.mechanism)),
        )
    {
        *count.entry((u, m)).or_default() += 1;
    }
    let mut users: Vec<String> = Vec::new();
    for u in req
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(req.upsertions.iter().map(|u| u.name.to_string()))
    {
        if !users.contains(&u) {
            users.push(u);
        }
    }
    for user in users {
        let mut r = AlterUserScramCredentialsResult::default();
        r.user = StrBytes::from_string(user.clone());
        let fail = |r: &mut AlterUserScramCredentialsResult, e: ResponseError, m: &str| {
            r.error_code = e.code();
            r.error_message = message(m);
        };
        if !allowed {
            fail(&mut r, ResponseError::ClusterAuthorizationFailed, "");
            resp.results.push(r);
            continue;
        }
        if user.is_empty() {
            fail(
                &mut r,
                ResponseError::UnacceptableCredential,
                "Username must not be empty",
            );
            resp.results.push(r);
            continue;
        }
        let deletions: Vec<i8> = req
            .deletions
            .iter()
            .filter(|d| d.name.as_str() == user)
            .map(|d| d.mechanism)
            .collect();
        let upsertions: Vec<_> = req
            .upsertions
            .iter()
            .filter(|u| u.name.as_str() == user)
            .collect();
        let pairs = deletions
            .iter()
            .copied()
            .chain(upsertions.iter().map(|u| u.mechanism));
        let mut error: Option<(ResponseError, &str)> = None;
        for m in pairs {
            if count.get(&(user.clone(), m)).copied().unwrap_or(0) > 1 {
                error = Some((
                    ResponseError::DuplicateResource,
                    "A user credential cannot be altered twice in the same request",
                ));
            } else if Mechanism::from_kafka(m).is_none() {
                error = Some((
                    ResponseError::UnsupportedSaslMechanism,
                    "Unknown SCRAM mechanism",
                ));
            }
        }
        for u in &upsertions {
            if !(DEFAULT_ITERATIONS..=MAX_ITERATIONS).contains(&u.iterations) {
                error = Some((
                    ResponseError::UnacceptableCredential,
                    "Iterations must be between 4096 and 16384",
                ));
            } else if u.salt.is_empty() || u.salted_password.is_empty() {
                error = Some((
                    ResponseError::UnacceptableCredential,
                    "Salt and salted password must not be empty",
                ));
            }
        }
        if error.is_none() {
            for m in &deletions {
                match meta.scram_credential(&user, i32::from(*m)).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        error = Some((
                            ResponseError::ResourceNotFound,
                            "Attempt to delete a user credential that does not exist",
                        ));
                    }
                    Err(_) => {
                        error = Some((ResponseError::KafkaStorageError, "credentials unavailable"))
                    }
                }
            }
        }
        if let Some((e, m)) = error {
            fail(&mut r, e, m);
            resp.results.push(r);
            continue;
        }
        let mut stored = Ok(());
        for m in &deletions {
            stored = stored.and(meta.delete_scram_credential(&user, i32::from(*m)).await);
        }
        for u in &upsertions {
            if let Some(m) = Mechanism::from_kafka(u.mechanism) {
                let c = m.credential_from_salted(&user, &u.salt, u.iterations, &u.salted_password);
                stored = stored.and(meta.put_scram_credential(&c).await);
            }
        }
        if let Err(e) = stored {
            r.error_code = e.kafka_code();
            r.error_message = message(&e.to_string());
        }
        resp.results.push(r);
    }
    resp
}
