#!/usr/bin/env python3
"""Opens N CONNECT tunnels through a proxy, uses each once (one HTTP request and its
response), leaves them open and idle, and reports how much the resident memory of the given
processes grew, per tunnel. Several batches (e.g. one per route) are opened one after the
other and all kept open, so a later batch cannot reuse memory an earlier one freed.

    agent_idle.py PROXY_HOST:PORT TARGET_HOST:PORT N LABEL:TOKEN:NAME=PID[,NAME=PID] ...
"""

import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def recv_until(s, marker):
    data = b""
    while marker not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed; got {data[:200]!r}")
        data += chunk
    return data


def open_tunnel(proxy, token, target):
    host, port = proxy.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.sendall(
        f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        f"Proxy-Authorization: Bearer {token}\r\n\r\n".encode()
    )
    head = recv_until(s, b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"CONNECT refused: {head[:200]!r}")
    # One request through the tunnel, so both directions have carried data.
    s.sendall(f"GET /1k HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    resp = recv_until(s, b"\r\n\r\n")
    length = 0
    for line in resp.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = resp.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += s.recv(65536)
    return s


def main():
    proxy, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keep = []
    for batch in sys.argv[4:]:
        label, token, procs = batch.split(":", 2)
        procs = [p.split("=", 1) for p in procs.split(",")]
        # One warm-up tunnel: first-use allocations (pools, buffers) are not per tunnel.
        keep.append(open_tunnel(proxy, token, target))
        time.sleep(1)
        before = {name: rss_kib(pid) for name, pid in procs}
        keep.extend(open_tunnel(proxy, token, target) for _ in range(n))
        time.sleep(2)
        after = {name: rss_kib(pid) for name, pid in procs}
        for name, _ in procs:
            grown = after[name] - before[name]
            print(
                f"{label}, {name}: {before[name]} KiB -> {after[name]} KiB with {n} more idle "
                f"tunnels: {grown / n:.1f} KiB per tunnel"
            )
    for s in keep:
        s.close()


if __name__ == "__main__":
    main()
