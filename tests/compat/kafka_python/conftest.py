"""Our fixture for kafka-python's integration tests (copied by tests/compat/run.sh to
test/conftest.py of the extracted kafka-python sdist, next to its own test/integration).

The suite's own fixtures (test/integration/conftest.py, fixtures.py) already know how to use
an external broker: with KAFKA_URI=PLAINTEXT://host:port every kafka_broker is an
ExternalService at that address instead of a spawned Kafka. This file makes sure the run is
configured that way and applies our skip list (tests/compat/kafka-python-skips.txt).
"""
import fnmatch
import os

import pytest

if not os.environ.get("KAFKA_URI") or not os.environ.get("KAFKA_VERSION"):
    raise pytest.UsageError(
        "set KAFKA_URI=PLAINTEXT://127.0.0.1:PORT and KAFKA_VERSION (tests/compat/run.sh does)")

# fixtures.Fixture.__init__ insists that a Kafka install directory exists, even for an
# external broker; any existing directory will do.
os.environ.setdefault("KAFKA_ROOT", os.path.dirname(os.path.abspath(__file__)))


def _load_skips():
    path = os.environ.get("KAFSCALE_COMPAT_SKIPS")
    skips = []
    if not path:
        return skips
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            pattern, _, reason = line.partition(" | ")
            skips.append((pattern.strip(), reason.strip() or "listed in kafka-python-skips.txt"))
    return skips


def pytest_collection_modifyitems(config, items):
    skips = _load_skips()
    for item in items:
        for pattern, reason in skips:
            if fnmatch.fnmatchcase(item.nodeid, pattern):
                item.add_marker(pytest.mark.skip(reason="kafscale: " + reason))
                break
