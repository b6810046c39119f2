#!/usr/bin/env python3
"""Small helpers for tests/compat/run.sh (standard library only).

  compat.py free-ports N             N distinct free loopback TCP ports, one per line
  compat.py wait-ready URL SECONDS   poll URL until it answers 200 (exit 1 on timeout)
  compat.py rdk-result LOG TEST      classify a librdkafka test-runner log: prints
                                     "<passed|failed|skipped>\t<detail>"
  compat.py junit JUNIT_XML SUITE    append kafka-python results as TSV rows to stdout
  compat.py table RESULTS_TSV        print the summary table and the closing
                                     "N passed, N failed" line; exit 1 if anything failed

Result rows are TSV: suite, test, result (passed/failed/skipped), seconds, detail.
"""
import re
import socket
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print("\n".join(map(str, ports)))


def wait_ready(url, seconds):
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return 0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return 1


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def rdk_result(log_path, test):
    """Classify one test number's run from the runner's closing summary, one row per test
    function (a number can have several, e.g. 0033_regex_subscribe and the mock-cluster
    0033_regex_subscribe_local that -L filters out):
        |<color> 0001_multiobj        |     PASSED |   2.1s | [failure reason]
    Prints "<passed|failed|skipped>\t<test names>\t<detail>"."""
    with open(log_path, errors="replace") as f:
        text = ANSI.sub("", f.read())
    row = re.compile(r"^\|\s*(%s_\S*)\s*\|\s*(\w+)\s*\|\s*([\d.]+)s\s*\|(.*)$" % re.escape(test))
    rows = {}
    for line in text.splitlines():
        m = row.match(line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(4).strip())
    # The runner's own failure report: '### Test "<name> (<subtest>)" failed at <where>: ###'
    # followed by the message.
    lines = text.splitlines()
    reason = ""
    for i, line in enumerate(lines):
        m = re.match(r'^### Test "(.*)" failed at (\S+)', line)
        if m and not m.group(1).startswith("<MAIN>"):
            msg = lines[i + 1].strip() if i + 1 < len(lines) else ""
            reason = "%s: %s [%s]" % (m.group(1), msg, m.group(2))
            break
    ran = {n: v for n, v in rows.items() if v[0] != "SKIPPED"}
    names = ",".join(sorted(ran or rows)) or test
    if not rows:
        # No summary: the runner crashed or was killed by the timeout.
        result, detail = "failed", reason or "no summary (crash or timeout)"
    elif not ran:
        result, detail = "skipped", "; ".join(sorted({v[1] for v in rows.values()}))
    elif all(v[0] == "PASSED" for v in ran.values()):
        result = "passed"
        detail = "no subtest ran (quick mode)" if vacuous(text, test) else ""
    else:
        result = "failed"
        detail = reason or "; ".join("%s %s %s" % (n, v[0], v[1]) for n, v in ran.items()
                                     if v[0] != "PASSED")
    print("%s\t%s\t%s" % (result, names, detail))


def vacuous(text, test):
    """True if the test is made of SUB_TESTs and -Q (quick mode) skipped all of them."""
    import glob
    import os
    srcs = glob.glob(os.path.join(os.environ.get("RDK_TESTS_DIR", "."), test + "-*.c*"))
    if not srcs:
        return False
    with open(srcs[0], errors="replace") as f:
        src = f.read()
    if "SUB_TEST" not in src or "SUB_TEST_QUICK" in src:
        return False
    return not re.search(r"^\[%s\S*\s*/\s*[\d.]+s\] \[ " % re.escape(test), text, re.M)


def junit(path, suite):
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        cls = case.get("classname", "")
        name = case.get("name", "")
        test = (cls.rsplit(".", 1)[-1] + "::" + name) if cls else name
        secs = float(case.get("time", "0") or 0)
        result, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                result = "failed"
                detail = (child.get("message") or child.tag).splitlines()[0][:200]
                break
            if child.tag == "skipped":
                result = "skipped"
                detail = (child.get("message") or "").splitlines()[0][:200] if child.get("message") else ""
        print("\t".join([suite, test, result, "%.1f" % secs, detail.replace("\t", " ")]))


def table(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 4:
                rows.append((parts + [""])[:5])
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    suites = []
    for r in rows:
        if r[0] not in suites:
            suites.append(r[0])
    for suite in suites:
        srows = [r for r in rows if r[0] == suite]
        width = max([len(r[1]) for r in srows] + [4])
        sc = {"passed": 0, "failed": 0, "skipped": 0}
        print()
        print("== %s ==" % suite)
        print("%-*s  %-7s  %8s  %s" % (width, "test", "result", "seconds", "detail"))
        for _, test, result, secs, detail in srows:
            sc[result] = sc.get(result, 0) + 1
            print("%-*s  %-7s  %8s  %s" % (width, test, result, secs,
                                          detail if result != "passed" else ""))
        print("%s: %d passed, %d failed, %d skipped" % (suite, sc["passed"], sc["failed"],
                                                         sc["skipped"]))
        for k in counts:
            counts[k] += sc.get(k, 0)
    print()
    if counts["skipped"]:
        print("%d skipped (reasons above)" % counts["skipped"])
    print("%d passed, %d failed" % (counts["passed"], counts["failed"]))
    return 1 if counts["failed"] or not rows else 0


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "free-ports":
        free_ports(int(argv[2]))
    elif cmd == "wait-ready":
        return wait_ready(argv[2], argv[3])
    elif cmd == "rdk-result":
        rdk_result(argv[2], argv[3])
    elif cmd == "junit":
        junit(argv[2], argv[3])
    elif cmd == "table":
        return table(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
