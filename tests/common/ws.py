"""A real WebSocket server and client (Python `websockets` >= 15) for tests/websocket.rs.

    ws.py server [--cert PEM --key PEM]
        Echo server on 127.0.0.1:0; prints its port, then serves until killed. Each
        connection first receives a JSON text message with what the handshake carried
        (path, Host, Authorization), then every message is echoed back. The path `/reject`
        is answered with a 403.

    ws.py client URL [--absolute HOST:PORT --proxy-auth VALUE] [--proxy URL] [--ca PEM]
                     [--header NAME:VALUE]... [--messages N] [--size BYTES] [--wait-close S]
        Connects to URL: through the proxy with an absolute-form handshake (--absolute), or
        through `--proxy` (CONNECT, as websockets does for an HTTP proxy), or directly. Prints
        one JSON line: the status, the server's first message, how many echoes matched, and
        with --wait-close, how long the connection stayed open without traffic before it was
        closed.
"""

import argparse
import asyncio
import http
import json
import socket
import ssl
import sys
import time

from websockets.asyncio.server import serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


def process_request(connection, request):
    """`/reject` is refused with a 403 of the server's own."""
    if request.path == "/reject":
        return connection.respond(http.HTTPStatus.FORBIDDEN, "rejected by the server\n")
    return None


async def handler(ws):
    h = ws.request.headers
    await ws.send(
        json.dumps(
            {
                "path": ws.request.path,
                "host": h.get("Host"),
                "authorization": h.get("Authorization"),
                "proxy_authorization": h.get("Proxy-Authorization"),
            }
        )
    )
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def server(args):
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
    async with serve(
        handler,
        "127.0.0.1",
        0,
        ssl=ctx,
        ping_interval=None,
        compression=None,
        process_request=process_request,
    ) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(port, flush=True)
        await srv.serve_forever()


def absolute_form(prefix):
    """Makes the handshake's request line absolute-form (`GET http://host:port/path`), as a
    client speaking to an HTTP proxy writes it."""
    original = ClientProtocol.send_request

    def send_request(self, request):
        request.path = prefix + request.path
        return original(self, request)

    ClientProtocol.send_request = send_request


def client(args):
    headers = dict(h.split(":", 1) for h in args.header)
    # No compression, so that the bytes tollgate counts are the bytes sent; no pings, so that
    # an idle connection is idle.
    kwargs = {
        "ping_interval": None,
        "open_timeout": 20,
        "additional_headers": headers,
        "compression": None,
    }
    if args.ca:
        kwargs["ssl"] = ssl.create_default_context(cafile=args.ca)
    if args.absolute:
        host, port = args.absolute.rsplit(":", 1)
        prefix = args.url.split("/", 3)
        absolute_form("http://" + prefix[2])
        headers["Proxy-Authorization"] = args.proxy_auth
        kwargs["sock"] = socket.create_connection((host, int(port)), timeout=20)
        kwargs["proxy"] = None
    elif args.proxy:
        kwargs["proxy"] = args.proxy
    else:
        kwargs["proxy"] = None
    out = {}
    try:
        with connect(args.url, **kwargs) as ws:
            out["status"] = 101
            out["first"] = json.loads(ws.recv(timeout=20))
            echoed = 0
            for i in range(args.messages):
                payload = (str(i) * args.size)[: args.size] or str(i)
                ws.send(payload)
                if ws.recv(timeout=20) == payload:
                    echoed += 1
            out["echoed"] = echoed
            if args.wait_close:
                start = time.monotonic()
                try:
                    ws.recv(timeout=args.wait_close)
                    out["closed_after"] = None
                except ConnectionClosed:
                    out["closed_after"] = time.monotonic() - start
                except TimeoutError:
                    out["closed_after"] = None
    except InvalidStatus as e:
        r = e.response
        out = {
            "status": r.status_code,
            "body": r.body.decode("utf-8", "replace") if r.body else "",
            "proxy_status": r.headers.get("Proxy-Status"),
            "content_type": r.headers.get("Content-Type"),
        }
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--cert")
    s.add_argument("--key")
    c = sub.add_parser("client")
    c.add_argument("url")
    c.add_argument("--absolute")
    c.add_argument("--proxy-auth", default="")
    c.add_argument("--proxy")
    c.add_argument("--ca")
    c.add_argument("--header", action="append", default=[])
    c.add_argument("--messages", type=int, default=3)
    c.add_argument("--size", type=int, default=10)
    c.add_argument("--wait-close", type=float, default=0)
    args = p.parse_args()
    if args.mode == "server":
        asyncio.run(server(args))
    else:
        client(args)


if __name__ == "__main__":
    sys.exit(main())
