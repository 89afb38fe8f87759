"""Publish CAs' CRLs and certificates over plain HTTP (RFC 5280 CRLDP and AIA caIssuers).

Each CA is served at the paths of the URLs in its own configuration: the ``crl_url`` path gives
the latest ``crl.der`` (read at each request, so a revocation is visible at once) and the
``aia_url`` path gives the CA certificate in DER. Plain HTTP is what RFC 5280 expects: CRLs and
certificates are signed objects. Loopback by default; put a real web server in front in
production.
"""

from __future__ import annotations

import base64
import binascii
import os
import pathlib
import threading
import urllib.parse
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import serialization

from caducee.errors import ConfigError
from caducee.pki.ocsp import OcspResponder
from caducee.pki.store import CRL_DER, CAStore

OCSP_RESPONSE = "application/ocsp-response"
MAX_OCSP_REQUEST = 64 * 1024

Route = tuple[str, pathlib.Path | bytes]  # content type, file to read or fixed body


def routes_for(ca_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for ca_dir in ca_dirs:
        store = CAStore(ca_dir)
        config = store.config()
        crl_path = urllib.parse.urlsplit(config.crl_url).path or "/"
        cert_der = store.certificate().public_bytes(serialization.Encoding.DER)
        for path, route in (
            (crl_path, ("application/pkix-crl", store.path / CRL_DER)),
            (
                urllib.parse.urlsplit(config.aia_url).path if config.aia_url else None,
                ("application/pkix-cert", cert_der),
            ),
        ):
            if path is None:
                continue
            if path in routes:
                raise ConfigError(f"{ca_dir}: URL path {path} is already served by another CA")
            routes[path] = route
    return routes


class _Handler(BaseHTTPRequestHandler):
    server: PKIServer
    server_version = "caducee-pki"
    sys_version = ""

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        route = self.server.routes.get(path)
        if route is None and self.server.ocsp and self._ocsp_get(path):
            return
        if route is None:
            self._send(404, "text/plain", b"not found\n")
            return
        content_type, body = route
        if isinstance(body, pathlib.Path):
            try:
                data = body.read_bytes()
            except OSError:
                self._send(503, "text/plain", b"no CRL issued yet\n")
                return
        else:
            data = body
        self._send(200, content_type, data)

    def do_POST(self) -> None:
        responder = self.server.ocsp.get(urllib.parse.urlsplit(self.path).path)
        length = int(self.headers.get("Content-Length") or 0)
        if responder is None or not 0 < length <= MAX_OCSP_REQUEST:
            self._send(404 if responder is None else 400, "text/plain", b"bad request\n")
            return
        self._send(200, OCSP_RESPONSE, responder.respond(self.rfile.read(length)))

    def _ocsp_get(self, path: str) -> bool:
        """RFC 6960 appendix A.1: GET {url}/{url-encoding of base64 of the DER request}."""
        base, _, encoded = path.rpartition("/")
        responder = self.server.ocsp.get(base or "/")
        if responder is None or not encoded:
            return False
        try:
            request = base64.b64decode(urllib.parse.unquote(encoded), validate=True)
        except (ValueError, binascii.Error):
            request = b""
        self._send(200, OCSP_RESPONSE, responder.respond(request))
        return True

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, code: int, content_type: str, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=300")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        if self.server.quiet:
            return
        super().log_message(format, *args)


class PKIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        routes: dict[str, Route],
        quiet: bool,
        ocsp: dict[str, OcspResponder] | None = None,
    ) -> None:
        self.routes = routes
        self.ocsp = ocsp or {}
        self.quiet = quiet
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def make_server(
    ca_dirs: Sequence[str | os.PathLike[str]],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    quiet: bool = True,
    responders: Sequence[OcspResponder] = (),
) -> PKIServer:
    """A server for ``ca_dirs`` bound to ``host:port`` (port 0: any free port).

    Each of ``responders`` answers OCSP at the path of its CA's ``ocsp_url``.
    """
    return PKIServer((host, port), routes_for(ca_dirs), quiet, ocsp_routes(responders))


def ocsp_routes(responders: Sequence[OcspResponder]) -> dict[str, OcspResponder]:
    routes = {}
    for responder in responders:
        url = responder.ca.config.ocsp_url
        if not url:
            raise ConfigError(f"{responder.ca.store.path}: no ocsp_url in the CA configuration")
        routes[urllib.parse.urlsplit(url).path or "/"] = responder
    return routes


def serve_in_thread(server: PKIServer) -> threading.Thread:
    """Run ``server`` in a daemon thread (tests, embedding); stop with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, name="caducee-pki-http", daemon=True)
    thread.start()
    return thread
