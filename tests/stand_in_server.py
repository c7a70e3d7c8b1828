"""The HTTP part shared by the API stand-ins (tests/kfp_stand_in.py, tests/kube_stand_in.py).

A threaded server on 127.0.0.1 (a free port) that records every request, finds the operation of
the spec (tests/openapi_spec.py) its method and path belong to, and writes the reply as JSON (or
text). What a stand-in answers, and the shape of its error replies, is the subclass's part:
`answer(req, raw_body, content_type)` and `error_reply(err)`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from tests.openapi_spec import Operation, Rejected


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_query: str = ""
    json: object = None
    files: dict[str, tuple[str | None, bytes]] = field(default_factory=dict)
    operation: str = ""
    status: int = 0


class StandInServer(ThreadingHTTPServer):
    """`with Server(...) as api: ... api.url ... api.requests`"""

    daemon_threads = True
    api = "the API"  # named in the 404 of a path the spec does not define
    not_found_code = 0  # the error code in that 404's reply

    def __init__(self, operations: list[Operation]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.operations = operations
        self.requests: list[Request] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)

    def calls(self, operation: str) -> list[Request]:
        return [r for r in self.requests if r.operation == operation]

    def route(self, req: Request) -> tuple[Operation, dict[str, str]]:
        """The operation that `req`'s method and path belong to (recorded on `req`), and its path
        parameters."""
        for op in self.operations:
            m = op.pattern.match(req.path)
            if m and op.method == req.method:
                req.operation = op.op_id
                return op, {n: unquote(v) for n, v in zip(op.param_names, m.groups())}
        raise Rejected(404, self.not_found_code, f"no operation {req.method} {req.path} in {self.api}")

    def answer(self, req: Request, raw_body: bytes, content_type: str) -> dict | str:
        raise NotImplementedError

    def error_reply(self, err: Rejected) -> dict:
        raise NotImplementedError


class _Handler(BaseHTTPRequestHandler):
    server: StandInServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        req = Request(self.command, parts.path, {}, {k.lower(): v for k, v in self.headers.items()}, parts.query)
        self.server.requests.append(req)
        try:
            reply, status = self.server.answer(req, raw, self.headers.get("Content-Type", "")), 200
        except Rejected as err:
            reply, status = self.server.error_reply(err), err.status
        req.status = status
        data = (reply if isinstance(reply, str) else json.dumps(reply)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(reply, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle
