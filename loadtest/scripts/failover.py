#!/usr/bin/env python3
# Failover time: kill -9 the worker whose pid is in PIDFILE and measure until every partition
# of a fresh 6-partition topic accepts acks=all produces again (kafka-python, no retries).
# Usage: loadtest/scripts/failover.py BOOTSTRAP TOPIC PIDFILE
import sys, time, os, signal, threading
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
boot, topic, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]
P = 6
try:
    KafkaAdminClient(bootstrap_servers=boot).create_topics([NewTopic(topic, P, 1)])
except Exception as e:
    print("create:", e)
time.sleep(2)
prod = KafkaProducer(bootstrap_servers=boot, acks='all', enable_idempotence=False, retries=0,
                     request_timeout_ms=1000, max_block_ms=1000, linger_ms=0)
def probe(p):
    t = time.time()
    try:
        prod.send(topic, b'x', partition=p).get(timeout=2)
        return True
    except Exception:
        return False
for p in range(P):
    assert probe(p), f"partition {p} not writable before the kill"
kill_at = time.time()
os.kill(int(open(pidfile).read()), signal.SIGKILL)
last_fail = {p: None for p in range(P)}
ok_since = {p: None for p in range(P)}
while time.time() - kill_at < 60:
    for p in range(P):
        if probe(p):
            if ok_since[p] is None: ok_since[p] = time.time()
        else:
            last_fail[p] = time.time(); ok_since[p] = None
    if all(ok_since[p] is not None and time.time() - ok_since[p] > 3 for p in range(P)):
        break
    time.sleep(0.05)
affected = [p for p in range(P) if last_fail[p] is not None]
print("affected partitions:", affected)
print("failover seconds (kill -9 until every partition accepts produces again): %.2f" % (max(ok_since[p] for p in range(P)) - kill_at if affected else 0))
