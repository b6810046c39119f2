#!/usr/bin/env python3
"""SASL OAUTHBEARER through kafka-python against a broker started with
KAFSCALE_SECURITY_PROTOCOL=SASL_PLAINTEXT and OAUTHBEARER enabled.

Checks: a client with the --good token produces and reads back its
records; a client with any --bad token (expired, wrong issuer, signed by an
unknown key, `alg: none`) cannot connect at all.

Usage: oauth_check.py --bootstrap HOST:PORT --good TOKEN --bad TOKEN [--bad TOKEN ...]
"""

import argparse
import sys
import uuid

try:
    import kafka.errors as Errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.net.sasl.oauth import AbstractTokenProvider
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import kafka-python ({exc}); run scripts/test.sh to install it",
          flush=True)
    sys.exit(1)

args = argparse.ArgumentParser()
args.add_argument("--bootstrap", required=True)
args.add_argument("--good", required=True)
args.add_argument("--bad", action="append", default=[])
opts = args.parse_args()


class Token(AbstractTokenProvider):
    def __init__(self, token):
        self._token = token

    def token(self):
        return self._token


def security(token, **extra):
    return dict(bootstrap_servers=opts.bootstrap, security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Token(token),
                request_timeout_ms=10000, **extra)


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)


topic = "oauth-" + uuid.uuid4().hex[:8]
producer = KafkaProducer(**security(opts.good))
for i in range(3):
    producer.send(topic, value=b"v%d" % i).get(timeout=30)
producer.close()
consumer = KafkaConsumer(**security(opts.good), consumer_timeout_ms=10000,
                         auto_offset_reset="earliest", enable_auto_commit=False)
consumer.assign([TopicPartition(topic, 0)])
consumer.seek(TopicPartition(topic, 0), 0)
got = [m.value for _, m in zip(range(3), consumer)]
consumer.close()
check(got == [b"v0", b"v1", b"v2"], f"the token's holder reads back its records: {got}")

for i, bad in enumerate(opts.bad):
    try:
        c = KafkaAdminClient(**security(bad, bootstrap_timeout_ms=3000,
                                        reconnect_backoff_ms=1000))
        c.list_topics()
        c.close()
        check(False, f"bad token #{i} was accepted")
    except Errors.KafkaError:
        pass
print(f"oauth_check: a valid token works, {len(opts.bad)} bad tokens refused", flush=True)
