"""A stand-in for the Kubernetes API server, speaking its wire format over real HTTP.

Kubernetes cannot run on the machines these tests run on, so this serves what
the exporter's ``kubernetes`` client asks for: list and watch of Jobs and Pods
(all namespaces or one), label-selector existence filtering, resourceVersions,
watch events as chunked JSON lines (ADDED, MODIFIED, DELETED, BOOKMARK, and the
ERROR Status with code 410 when a resourceVersion is too old), and error
statuses on demand.  The objects it serves are built from the client's own
model classes (pipeline_sdk/testing/kube_objects.py) and serialised the way the client does.

For fault tests it also serves what a real API server never would: objects of any
shape (``apply_raw``, listed and streamed like the others, whatever their labels),
one-off watch events of any shape (``send_event``: an ERROR Status without a code, a
line that is not JSON...), and list bodies of any shape (``odd_lists``, one per list).
Every request is recorded with its method, so a test can hold the RBAC rules to the
calls the exporter really makes.

Leases (``coordination.k8s.io/v1``, one namespace each) have the real API's update
semantics: GET answers 404 NotFound when there is none, POST creates one (201, its
resourceVersion set; 409 AlreadyExists for a second one), PUT replaces it only when
the body's ``metadata.resourceVersion`` is the stored one (else 409 Conflict, the
optimistic concurrency of every Kubernetes update), and every error is a ``Status``.

One module, over 400 lines, on purpose: it is one fake server, its state and its handler.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

RESOURCES = {"jobs": ("batch/v1", "JobList"), "pods": ("v1", "PodList")}
LEASES = "/apis/coordination.k8s.io/v1/namespaces/"  # .../{namespace}/leases[/{name}]


@dataclass
class _Event:
    version: int
    resource: str
    kind: str
    obj: Any
    raw: bool = False  # an object of any shape: served whatever its labels and namespace


def _namespace(obj: Any) -> Any:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta.get("namespace") if isinstance(meta, dict) else None


class FakeKube:
    """The state: objects, their history of watch events, and failure switches."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 100
        self._objects: dict[tuple[str, str, str], Any] = {}
        self._raw_keys: set[tuple[str, str, str]] = set()  # objects stored by apply_raw
        self._events: list[_Event] = []
        self._versions: list[int] = []  # the events' versions, for bisect
        self._oldest = 0  # events at or before this version are compacted away (410)
        self._oneoff: dict[str, list[bytes]] = {"jobs": [], "pods": []}  # lines for the next watch
        self.fail_requests = 0  # answer this many next requests with 500
        self.odd_lists: dict[str, list[Any]] = {"jobs": [], "pods": []}  # bodies for the next lists
        self.requests: list[tuple[str, str]] = []  # (method, path with query), in arrival order
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name) -> the Lease

    # ---- changing the cluster ----------------------------------------------------------------

    def apply(self, resource: str, obj: dict[str, Any]) -> None:
        """Create or update an object (ADDED or MODIFIED)."""
        meta = obj["metadata"]
        key = (resource, meta["namespace"], meta["name"])
        with self._cond:
            kind = "MODIFIED" if key in self._objects else "ADDED"
            self._record(resource, kind, key, copy.deepcopy(obj))

    def apply_raw(self, resource: str, obj: Any, *, set_version: bool = True) -> None:
        """Store an object of any shape (ADDED): listed, and streamed to watches, as it is.

        Its resourceVersion is set when it has a metadata mapping and ``set_version``.
        """
        with self._cond:
            key = (resource, "", f"raw-{self._version + 1}")
            self._raw_keys.add(key)
            self._record(resource, "ADDED", key, copy.deepcopy(obj), raw=True, set_version=set_version)

    def send_event(self, resource: str, event: Any) -> None:
        """Write one event of any shape (a JSON value, or bytes as they are) to the next watch
        of ``resource``, once: like an API server's ERROR Status, it is not part of the history."""
        line = event if isinstance(event, bytes) else json.dumps(event).encode()
        with self._cond:
            self._oneoff[resource].append(line)
            self._cond.notify_all()

    def delete(self, resource: str, namespace: str, name: str) -> None:
        with self._cond:
            key = (resource, namespace, name)
            self._record(resource, "DELETED", key, self._objects[key])

    def _record(
        self,
        resource: str,
        kind: str,
        key: tuple[str, str, str],
        obj: Any,
        *,
        raw: bool = False,
        set_version: bool = True,
    ) -> None:
        self._version += 1
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if set_version and isinstance(meta, dict):
            meta["resourceVersion"] = str(self._version)
        if kind == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._events.append(_Event(self._version, resource, kind, obj, raw))
        self._versions.append(self._version)
        self._cond.notify_all()

    def compact(self) -> None:
        """Forget the event history: every open watch gets 410 Gone and must relist."""
        with self._cond:
            self._oldest = self._version + 1
            self._events.clear()
            self._versions.clear()
            self._cond.notify_all()

    @property
    def version(self) -> int:
        return self._version

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the stored Lease, or None."""
        with self._cond:
            found = self.leases.get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def write_lease(
        self, method: str, namespace: str, name: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        """Create (POST) or replace (PUT) a Lease: (HTTP status, the stored Lease or a Status)."""
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            return 422, status_body(
                422, "Invalid", "Lease.coordination.k8s.io: metadata.name: Required value"
            )
        if name is not None and meta["name"] != name:
            return 400, status_body(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        key = (namespace, meta["name"])
        with self._cond:
            stored = self.leases.get(key)
            if method == "POST" and stored is not None:
                return 409, status_body(
                    409,
                    "AlreadyExists",
                    f'leases.coordination.k8s.io "{meta["name"]}" already exists',
                    meta["name"],
                )
            if method == "PUT" and stored is None:
                return 404, status_body(
                    404, "NotFound", f'leases.coordination.k8s.io "{meta["name"]}" not found', meta["name"]
                )
            if method == "PUT" and meta.get("resourceVersion") != stored["metadata"]["resourceVersion"]:  # type: ignore[index]
                return 409, status_body(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{meta["name"]}": '
                    "the object has been modified; please apply your changes to the latest version "
                    "and try again",
                    meta["name"],
                )
            self._version += 1
            lease = copy.deepcopy(body)
            lease.update(apiVersion="coordination.k8s.io/v1", kind="Lease")
            lease["metadata"].update(namespace=namespace, resourceVersion=str(self._version))
            if stored is not None:
                lease["metadata"]["uid"] = stored["metadata"]["uid"]
                lease["metadata"]["creationTimestamp"] = stored["metadata"]["creationTimestamp"]
            else:
                lease["metadata"]["uid"] = f"lease-{self._version}"
                lease["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.leases[key] = lease
            return (201 if method == "POST" else 200), copy.deepcopy(lease)

    # ---- serving ------------------------------------------------------------------------------

    def list_body(self, resource: str, namespace: str | None, selector: str | None) -> dict[str, Any]:
        api_version, kind = RESOURCES[resource]
        with self._cond:
            items = [
                o
                for key, o in sorted(self._objects.items())
                if key[0] == resource
                and (
                    key in self._raw_keys
                    or ((namespace is None or key[1] == namespace) and _selected(o, selector))
                )
            ]
            return {
                "kind": kind,
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self._version)},
                "items": items,
            }

    def events_after(
        self, resource: str, namespace: str | None, selector: str | None, version: int, deadline: float
    ) -> tuple[list[bytes], list[_Event]] | None:
        """One-off lines, then events newer than ``version`` (waiting until some come or the
        deadline); None: 410."""
        with self._cond:
            while True:
                if version < self._oldest:
                    return None
                oneoff, self._oneoff[resource] = self._oneoff[resource], []
                start = bisect.bisect_right(self._versions, version)
                found = [
                    e
                    for e in self._events[start:]
                    if e.version > version
                    and e.resource == resource
                    and (
                        e.raw
                        or (
                            (namespace is None or _namespace(e.obj) == namespace)
                            and _selected(e.obj, selector)
                        )
                    )
                ]
                left = deadline - time.monotonic()
                if oneoff or found or left <= 0:
                    return oneoff, found
                self._cond.wait(min(left, 0.5))

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


def status_body(code: int, reason: str, message: str, name: str | None = None) -> dict[str, Any]:
    """A ``Status`` as the API server sends it with an error (kind, reason, code, details)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name is not None:
        body["details"] = {"name": name, "group": "coordination.k8s.io", "kind": "leases"}
    return body


def _lease_route(path: str) -> tuple[str, str | None] | None:
    """(namespace, name or None) of a Lease path, or None."""
    if not path.startswith(LEASES):
        return None
    parts = path[len(LEASES) :].strip("/").split("/")
    if len(parts) == 2 and parts[1] == "leases":
        return parts[0], None
    if len(parts) == 3 and parts[1] == "leases" and parts[2]:
        return parts[0], parts[2]
    return None


def _selected(obj: dict[str, Any], selector: str | None) -> bool:
    """Existence selectors ("mlobs.io/pipeline") and equality ("a=b"), comma-separated."""
    if not selector:
        return True
    labels = obj["metadata"].get("labels") or {}
    for term in selector.split(","):
        if "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term not in labels:
            return False
    return True


def _route(path: str) -> tuple[str, str | None] | None:
    parts = [p for p in path.split("/") if p]
    # /api/v1/pods, /api/v1/namespaces/{ns}/pods, /apis/batch/v1/jobs, /apis/batch/v1/namespaces/{ns}/jobs
    if parts[:2] == ["api", "v1"]:
        rest = parts[2:]
    elif parts[:3] == ["apis", "batch", "v1"]:
        rest = parts[3:]
    else:
        return None
    if len(rest) == 1 and rest[0] in RESOURCES:
        return rest[0], None
    if len(rest) == 3 and rest[0] == "namespaces" and rest[2] in RESOURCES:
        return rest[2], rest[1]
    return None


class FakeKubeServer:
    """FakeKube over HTTP on 127.0.0.1 (port 0 by default)."""

    def __init__(self, kube: FakeKube | None = None, port: int = 0) -> None:
        self.kube = kube or FakeKube()
        kube_ = self.kube
        self._stopping = threading.Event()
        stopping = self._stopping

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urlparse(self.path)
                kube_.requests.append(("GET", self.path))
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                lease_route = _lease_route(url.path)
                if lease_route is not None and (name := lease_route[1]) is not None:
                    lease = kube_.lease(lease_route[0], name)
                    if lease is None:
                        message = f'leases.coordination.k8s.io "{name}" not found'
                        return self._json(404, status_body(404, "NotFound", message, name))
                    return self._json(200, lease)
                route = _route(url.path)
                if route is None:
                    return self._status(404, "NotFound", f"no such path {url.path}")
                if kube_.fail_requests > 0:
                    kube_.fail_requests -= 1
                    return self._status(500, "InternalError", "injected failure")
                resource, namespace = route
                selector = query.get("labelSelector")
                if query.get("watch") in ("true", "1", "True"):
                    return self._watch(resource, namespace, selector, query)
                odd = kube_.odd_lists[resource]
                listed = odd.pop(0) if odd else kube_.list_body(resource, namespace, selector)
                body = json.dumps(listed).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None

            def _watch(
                self, resource: str, namespace: str | None, selector: str | None, query: dict[str, str]
            ) -> None:
                version = int(query.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 300)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while not stopping.is_set() and time.monotonic() < deadline:
                        events = kube_.events_after(resource, namespace, selector, version, deadline)
                        if events is None:
                            status = {
                                "kind": "Status",
                                "apiVersion": "v1",
                                "metadata": {},
                                "status": "Failure",
                                "message": f"too old resource version: {version}",
                                "reason": "Expired",
                                "code": 410,
                            }
                            self._chunk({"type": "ERROR", "object": status})
                            break
                        oneoff, found = events
                        for line in oneoff:
                            self._write_chunk(line + b"\n")
                        for event in found:
                            self._chunk({"type": event.kind, "object": event.obj})
                            version = event.version
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return

            def _chunk(self, event: dict[str, Any]) -> None:
                self._write_chunk(json.dumps(event).encode() + b"\n")

            def _write_chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _refuse(self) -> None:
                """Any other method: recorded, and refused as a read-only API would."""
                kube_.requests.append((self.command, self.path))
                self._status(405, "MethodNotAllowed", f"{self.command} is not served")

            def _write(self) -> None:
                """POST (create) and PUT (replace) of Leases; anything else is refused."""
                route = _lease_route(urlparse(self.path).path)
                if route is None or (self.command == "POST") != (route[1] is None):
                    length = int(self.headers.get("Content-Length") or 0)
                    self.rfile.read(length)
                    return self._refuse()
                kube_.requests.append((self.command, self.path))
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._status(400, "BadRequest", "the body is not JSON")
                if kube_.fail_requests > 0:
                    kube_.fail_requests -= 1
                    return self._status(500, "InternalError", "injected failure")
                code, answer = kube_.write_lease(self.command, route[0], route[1], body)
                return self._json(code, answer)

            do_POST = do_PUT = _write
            do_PATCH = do_DELETE = _refuse

            def _json(self, code: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._json(code, status_body(code, reason, message))

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self.kube.wake()
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    """Serve a fake API in its own process; with --replay, stream a recording when told to.

    Prints ``LISTENING <port>``; then each line "replay" on stdin applies every event
    of the recording (JSON lines of ``{"resource", "type", "object"}``) at once, so the
    watches stream them, and prints ``REPLAYED <n>``.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--replay", help="JSON-lines recording of watch events")
    args = parser.parse_args(argv)
    server = FakeKubeServer(port=args.port)
    print(f"LISTENING {server.port}", flush=True)
    for line in sys.stdin:
        if line.strip() == "replay" and args.replay:
            count = 0
            with open(args.replay) as fh:
                for raw in fh:
                    event = json.loads(raw)
                    meta = event["object"]["metadata"]
                    if event["type"] == "DELETED":
                        server.kube.delete(event["resource"], meta["namespace"], meta["name"])
                    else:
                        server.kube.apply(event["resource"], event["object"])
                    count += 1
            print(f"REPLAYED {count}", flush=True)
    server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
