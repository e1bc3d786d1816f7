#!/usr/bin/env python3
"""Opens N keep-alive client connections to a forward proxy, sends one absolute-form GET on
each (so every connection has been served once), leaves them all open and idle, waits for
the proxy's resident memory to settle, and prints it (the memory after all are open, as
`rss_kib N`). bench/compare.sh runs it for the "10,000 idle client connections" target.

    idle_clients.py PROXY_HOST:PORT URL PROXY_AUTHORIZATION N PID
"""

import socket
import sys
import time

from agent_idle import rss_kib  # bench/, beside this file


def read_response(s):
    """Reads one response with a Content-Length body; returns its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for h in lines[1:]:
        name, _, value = h.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed in the body")
        body += chunk
    return status


def main():
    proxy, url, auth, n, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    host, port = proxy.rsplit(":", 1)
    authority = url.split("/")[2]
    request = (
        f"GET {url} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {auth}\r\n\r\n"
    ).encode()
    before = rss_kib(pid)
    conns, batch = [], 250
    start = time.time()
    while len(conns) < n:
        fresh = []
        for _ in range(min(batch, n - len(conns))):
            s = socket.create_connection((host, int(port)))
            s.sendall(request)
            fresh.append(s)
        for s in fresh:
            status = read_response(s)
            if status != 200:
                raise RuntimeError(f"status {status} on connection {len(conns)}")
            conns.append(s)
    opened = time.time() - start
    # Let the proxy's idle connections settle (buffers released after the response).
    time.sleep(2)
    after = rss_kib(pid)
    print(f"opened {len(conns)} connections in {opened:.1f} s, one 200 on each")
    print(f"rss_before_kib {before}")
    print(f"rss_kib {after}")
    print(f"per_connection_kib {(after - before) / len(conns):.2f}")
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
