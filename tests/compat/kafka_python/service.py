"""Stand-in for kafka-python's test/service.py, which its sdist does not ship but
test/integration/fixtures.py imports. Only the external-broker path is supported."""
import logging

log = logging.getLogger(__name__)


class ExternalService:
    def __init__(self, host, port):
        log.info("Using already running service at %s:%d", host, port)
        self.host = host
        self.port = port

    def open(self):
        pass

    def close(self):
        pass

    def stop(self):
        pass

    def dump_logs(self):
        pass

    def wait_for(self, pattern, timeout=30):
        return True


class SpawnedService:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "tests/compat runs kafka-python's suite against an external broker only "
            "(KAFKA_URI); this test wants to spawn its own Kafka/ZooKeeper")
