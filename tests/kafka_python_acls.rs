//! ACLs through kafka-python: runs `tests/python/acl_check.py` against
//! `kafscale dev` with the ACL authorizer (create, describe and delete ACLs;
//! produce, fetch, commit, listing and group joins denied by them), and
//! against the default dev server, whose ACL APIs answer SECURITY_DISABLED.
//! ACLs are metadata, so they survive a restart.

mod common;

use common::{run_kafka_python_check, DevOptions, DevServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_are_managed_and_enforced_with_kafka_semantics() {
    let mut server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_AUTHORIZER", "acl")
            .env("KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND", "true")
            .env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0),
    )
    .await;
    run_kafka_python_check("acl_check.py", &server, &[]).await;
    // The script ends with DENY ALTER on the cluster in place: after a
    // restart the stored ACL still refuses CreateAcls.
    server.restart().await;
    run_kafka_python_check("acl_check.py", &server, &["--still-denied"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_authorizer_acl_apis_answer_security_disabled() {
    let server = DevServer::start(DevOptions::default()).await;
    run_kafka_python_check("acl_check.py", &server, &["--disabled"]).await;
}
