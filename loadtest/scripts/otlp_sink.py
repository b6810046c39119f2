#!/usr/bin/env python3
"""A minimal OTLP/HTTP trace sink for benchmarks: accepts POST /v1/traces
(protobuf bodies), answers an empty ExportTraceServiceResponse, and counts
requests and bytes, printed on SIGTERM or written to the file given.

    otlp_sink.py PORT STATS_FILE
"""
import http.server
import signal
import sys

port, stats_file = int(sys.argv[1]), sys.argv[2]
stats = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        stats["requests"] += 1
        stats["bytes"] += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    with open(stats_file, "w") as f:
        f.write(f"{stats['requests']} {stats['bytes']}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
