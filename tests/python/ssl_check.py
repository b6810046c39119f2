#!/usr/bin/env python3
"""TLS with client certificates through kafka-python, against a broker
started with KAFSCALE_SECURITY_PROTOCOL=SSL, a client CA, and
KAFSCALE_AUTHORIZER=acl with User:alice as super user.

Checks: with alice's certificate, produce and read back over TLS; with
mallory's (valid, but User:mallory may do nothing), producing fails with
TOPIC_AUTHORIZATION_FAILED; without a certificate, no connection.

Usage: ssl_check.py --bootstrap HOST:PORT --dir PKI_DIR
(PKI_DIR holds ca.pem, alice.pem/.key, mallory.pem/.key)
"""

import argparse
import os
import sys
import uuid

try:
    import kafka.errors as Errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import kafka-python ({exc}); run scripts/test.sh to install it",
          flush=True)
    sys.exit(1)

args = argparse.ArgumentParser()
args.add_argument("--bootstrap", required=True)
args.add_argument("--dir", required=True)
opts = args.parse_args()


def ssl(who, **extra):
    cfg = dict(bootstrap_servers=opts.bootstrap, security_protocol="SSL",
               ssl_cafile=os.path.join(opts.dir, "ca.pem"), ssl_check_hostname=False,
               request_timeout_ms=10000, **extra)
    if who:
        cfg.update(ssl_certfile=os.path.join(opts.dir, f"{who}.pem"),
                   ssl_keyfile=os.path.join(opts.dir, f"{who}.key"))
    return cfg


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)


topic = "ssl-" + uuid.uuid4().hex[:8]
producer = KafkaProducer(**ssl("alice"))
for i in range(3):
    producer.send(topic, value=b"v%d" % i).get(timeout=30)
producer.close()
consumer = KafkaConsumer(**ssl("alice"), consumer_timeout_ms=10000,
                         auto_offset_reset="earliest", enable_auto_commit=False)
consumer.assign([TopicPartition(topic, 0)])
consumer.seek(TopicPartition(topic, 0), 0)
got = [m.value for _, m in zip(range(3), consumer)]
consumer.close()
check(got == [b"v0", b"v1", b"v2"], f"alice reads back over mTLS: {got}")

producer = KafkaProducer(**ssl("mallory"), max_block_ms=10000)
try:
    producer.send(topic, value=b"x").get(timeout=30)
    check(False, "mallory could write")
except Errors.TopicAuthorizationFailedError:
    pass
producer.close()

try:
    c = KafkaAdminClient(**ssl(None, bootstrap_timeout_ms=3000))
    c.list_topics()
    check(False, "a client without a certificate connected")
except Errors.KafkaError:
    pass
print("ssl_check: mTLS principal from the certificate, ACLs applied, no certificate refused",
      flush=True)
