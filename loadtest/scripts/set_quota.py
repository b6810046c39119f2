#!/usr/bin/env python3
"""Sets (or removes) a client quota through AlterClientQuotas v0, for the
quota benchmark (loadtest/scripts/security.sh). Plain sockets and the
protocol's own encoding, so it needs nothing installed.

  set_quota.py HOST:PORT ENTITY KEY=VALUE [KEY=VALUE ...]

ENTITY is `user=NAME`, `client-id=NAME`, `ip=ADDR`, or `TYPE=` for the
type's default entity, comma-separated to combine (`user=alice,client-id=`).
A VALUE of `-` removes the key. Exits non-zero on any error code.
"""
import socket
import struct
import sys


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def nullable(s):
    return struct.pack(">h", -1) if s is None else string(s)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    host, port = sys.argv[1].rsplit(":", 1)
    entity = []
    for part in sys.argv[2].split(","):
        t, _, name = part.partition("=")
        entity.append((t, name or None))
    ops = []
    for kv in sys.argv[3:]:
        k, _, v = kv.partition("=")
        ops.append((k, 0.0, True) if v == "-" else (k, float(v), False))
    body = struct.pack(">i", 1)  # one entry
    body += struct.pack(">i", len(entity))
    for t, name in entity:
        body += string(t) + nullable(name)
    body += struct.pack(">i", len(ops))
    for k, v, remove in ops:
        body += string(k) + struct.pack(">d?", v, remove)
    body += struct.pack(">?", False)  # validate_only
    header = struct.pack(">hhi", 49, 0, 1) + string("set_quota.py")
    frame = header + body
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", recv(s, 4))[0]
        resp = recv(s, size)
    # correlation id, throttle time, entries: error code, message, entity
    _cid, _throttle, n = struct.unpack(">iii", resp[:12])
    pos = 12
    failed = False
    for _ in range(n):
        code, mlen = struct.unpack(">hh", resp[pos:pos + 4])
        pos += 4
        msg = resp[pos:pos + mlen].decode() if mlen >= 0 else ""
        pos += max(mlen, 0)
        if code != 0:
            print(f"error {code}: {msg}", file=sys.stderr)
            failed = True
        (m,) = struct.unpack(">i", resp[pos:pos + 4])
        pos += 4
        for _ in range(m):
            (tl,) = struct.unpack(">h", resp[pos:pos + 2])
            pos += 2 + tl
            (nl,) = struct.unpack(">h", resp[pos:pos + 2])
            pos += 2 + max(nl, 0)
    sys.exit(1 if failed else 0)


def recv(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise SystemExit("connection closed")
        out += chunk
    return out


if __name__ == "__main__":
    main()
