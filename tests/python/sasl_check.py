#!/usr/bin/env python3
"""SASL and SCRAM credentials through kafka-python, against a broker
started with KAFSCALE_SECURITY_PROTOCOL=SASL_PLAINTEXT (or SASL_SSL with
--ca) and KAFSCALE_SASL_USERS=admin:admin-secret.

Checks:
  * SCRAM-SHA-256 as admin: produce and consume round-trip;
  * AlterUserScramCredentials creates bob (SCRAM-SHA-512, 8192 iterations);
    DescribeUserScramCredentials lists admin (both mechanisms) and bob;
    describing an unknown user answers RESOURCE_NOT_FOUND; iterations
    below 4096 are refused (UNACCEPTABLE_CREDENTIAL);
  * bob authenticates with SCRAM-SHA-512 and PLAIN and reads the records;
  * a wrong password and an unknown user fail with
    SASL_AUTHENTICATION_FAILED (kafka-python raises
    SaslAuthenticationFailedError / NoBrokersAvailable);
  * deleting bob's credential: bob can no longer authenticate.

Usage: sasl_check.py --bootstrap HOST:PORT [--ca CA.pem]
Exits 0 with a summary if every check passed; 1 with the failed check.
"""

import argparse
import sys
import uuid

try:
    import kafka.errors as Errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.admin._users import (ScramMechanism, UserScramCredentialDeletion,
                                    UserScramCredentialUpsertion)
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import kafka-python ({exc}); run scripts/test.sh to install it",
          flush=True)
    sys.exit(1)

args = argparse.ArgumentParser()
args.add_argument("--bootstrap", required=True)
args.add_argument("--ca")
opts = args.parse_args()


def security(user, password, mechanism):
    cfg = dict(bootstrap_servers=opts.bootstrap,
               security_protocol="SASL_SSL" if opts.ca else "SASL_PLAINTEXT",
               sasl_mechanism=mechanism, sasl_plain_username=user,
               sasl_plain_password=password, request_timeout_ms=10000)
    if opts.ca:
        cfg.update(ssl_cafile=opts.ca, ssl_check_hostname=False)
    return cfg


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)


def refused(user, password, mechanism):
    """True if the client cannot authenticate (and so cannot connect)."""
    try:
        # Few attempts: each failure counts against the address's budget.
        c = KafkaAdminClient(**security(user, password, mechanism),
                             bootstrap_timeout_ms=3000, reconnect_backoff_ms=1000)
        c.list_topics()
        c.close()
        return False
    except Errors.KafkaError:
        # kafka-python reports it as a bootstrap failure; the broker's
        # failure counter (checked by the Rust side) says why.
        return True


topic = "sasl-" + uuid.uuid4().hex[:8]
admin = KafkaAdminClient(**security("admin", "admin-secret", "SCRAM-SHA-256"))
admin.create_topics([NewTopic(topic, 1, 1)])
producer = KafkaProducer(**security("admin", "admin-secret", "SCRAM-SHA-256"))
for i in range(5):
    producer.send(topic, key=b"k%d" % i, value=b"v%d" % i).get(timeout=30)
producer.close()


def read_as(user, password, mechanism):
    c = KafkaConsumer(**security(user, password, mechanism), consumer_timeout_ms=10000,
                      auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([TopicPartition(topic, 0)])
    c.seek(TopicPartition(topic, 0), 0)
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == 5:
            break
    c.close()
    return got


check(read_as("admin", "admin-secret", "SCRAM-SHA-256") == [b"v%d" % i for i in range(5)],
      "admin reads back what it produced over SCRAM-SHA-256")

# Credentials through the API.
res = admin.alter_user_scram_credentials([
    UserScramCredentialUpsertion("bob", ScramMechanism.SCRAM_SHA_512, "bob-secret",
                                 iterations=8192)])
check(res == {"bob": None}, f"bob's credential is created: {res}")
res = admin.alter_user_scram_credentials([
    UserScramCredentialUpsertion("weak", ScramMechanism.SCRAM_SHA_256, "x", iterations=100)])
check(res.get("weak") is not None, f"100 iterations are refused: {res}")
desc = admin.describe_user_scram_credentials()
check(set(desc) == {"admin", "bob"}, f"described users: {desc}")
check({ci["mechanism"] for ci in desc["admin"]["credential_infos"]} ==
      {ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512},
      f"admin has both mechanisms: {desc['admin']}")
check(desc["bob"]["credential_infos"] == [{"mechanism": ScramMechanism.SCRAM_SHA_512,
                                            "iterations": 8192}], f"bob: {desc['bob']}")
missing = admin.describe_user_scram_credentials(["nobody"])
check(missing["nobody"]["error"] is not None, f"an unknown user is not found: {missing}")

check(read_as("bob", "bob-secret", "SCRAM-SHA-512") == [b"v%d" % i for i in range(5)],
      "bob reads over SCRAM-SHA-512 with the credential created through the API")
check(read_as("bob", "bob-secret", "PLAIN") == [b"v%d" % i for i in range(5)],
      "bob reads over PLAIN (checked against the SCRAM credential)")
check(refused("bob", "wrong", "SCRAM-SHA-512"), "a wrong SCRAM password is refused")
check(refused("bob", "wrong", "PLAIN"), "a wrong PLAIN password is refused")
check(refused("mallory", "x", "SCRAM-SHA-256"), "an unknown user is refused")
check(refused("bob", "bob-secret", "SCRAM-SHA-256"),
      "bob has no SCRAM-SHA-256 credential: refused")

res = admin.alter_user_scram_credentials([
    UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_512)])
check(res == {"bob": None}, f"bob's credential is deleted: {res}")
check(refused("bob", "bob-secret", "SCRAM-SHA-512"), "a deleted credential no longer works")
admin.close()
print("sasl_check: SCRAM-SHA-256/512 and PLAIN, credentials API, refusals: all checks passed",
      flush=True)
