"""The HTTP directory: a small JSON + DER server over any backend, and its client.

Server (``caducee directory serve``)::

    GET  /v1/health                                   {"status": "ok", "directory": name}
    GET  /v1/lookup?email=&name=&professional_id=&organisation=
                                                      {"entries": [...], "problems": [...]}
    GET  /v1/entries/<e-mail>/certificates/<sha256>.der   the certificate (application/pkix-cert)
    POST /v1/entries     (Bearer token)               publish an entry (JSON as in lookups)
    POST /v1/withdraw    (Bearer token)               {"email"|"certificate"(base64)|"serial"(hex)}

Lookups are public; changes need the operator's token (without one the server is read-only).
Every answer is JSON except the DER download; errors are ``{"error": "..."}`` with a 4xx/5xx code.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http.client
import http.server
import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from cryptography import x509

from caducee.directory.api import (
    Directory,
    DirectoryEntry,
    DirectoryUnavailableError,
    EntryNotFoundError,
    InvalidEntryError,
    LookupResult,
    MalformedCertificateError,
    Query,
    ReadOnlyDirectoryError,
    _CertPredicate,
    build_entry,
    certificate_purposes,
    decode_certificate,
    der,
    fingerprint,
)
from caducee.errors import CaduceeError, DirectoryError, UsageError
from caducee.serials import format_serial, parse_serial

__all__ = ["DirectoryHTTPServer", "HttpDirectory", "entry_to_json", "start_server"]

MAX_BODY = 1 << 20
_FIELDS = (
    "email",
    "common_name",
    "surname",
    "given_name",
    "profession",
    "organisation",
    "professional_id",
)


def entry_to_json(entry: DirectoryEntry) -> dict[str, Any]:
    quoted = urllib.parse.quote(entry.email, safe="@")
    out: dict[str, Any] = {f: getattr(entry, f) for f in _FIELDS}
    out["source"] = entry.source
    out["certificates"] = [
        {
            "fingerprint_sha256": fingerprint(c),
            "serial": format_serial(c.serial_number),
            "issuer": c.issuer.rfc4514_string(),
            "usage": sorted(certificate_purposes(c)),
            "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat(),
            "der": base64.b64encode(der(c)).decode(),
            "href": f"/v1/entries/{quoted}/certificates/{fingerprint(c)}.der",
        }
        for c in entry.certificates
    ]
    return out


def entry_from_json(
    data: object, where: str, problems: list[str], source: str
) -> DirectoryEntry | None:
    """Decode one JSON entry defensively: bad certificates and fields become problems."""
    if not isinstance(data, dict):
        problems.append(f"{where}: entry is not a JSON object; skipped")
        return None
    fields = {f: data.get(f, "") for f in _FIELDS}
    if not all(isinstance(v, str) for v in fields.values()):
        problems.append(f"{where}: entry fields are not strings; skipped")
        return None
    certs = []
    raw_certs = data.get("certificates", [])
    for i, item in enumerate(raw_certs if isinstance(raw_certs, list) else []):
        label = f"{where} ({fields['email']}) certificate #{i + 1}"
        try:
            blob = base64.b64decode(item["der"], validate=True)
            certs.append(decode_certificate(blob, label))
        except MalformedCertificateError as exc:
            problems.append(str(exc))
        except (TypeError, KeyError, binascii.Error, ValueError):
            problems.append(f"{label}: not base64 DER; skipped")
    return build_entry(fields, certs, where, problems, source)


# --- server ------------------------------------------------------------------------------------


def _route(path: str) -> str:
    """The resource asked for, fit for a log: no query string, no e-mail, no fingerprint."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts in (["v1", "health"], ["v1", "lookup"], ["v1", "entries"], ["v1", "withdraw"]):
        return "/" + "/".join(parts)
    if len(parts) == 5 and parts[:2] == ["v1", "entries"] and parts[3] == "certificates":
        return "/v1/entries/<e-mail>/certificates/<sha256>.der"
    return "<other>"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: DirectoryHTTPServer
    timeout = 15
    protocol_version = "HTTP/1.1"
    server_version = "caducee-directory"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Never log what the client sent: request lines, paths and bodies carry e-mail
        addresses. Only the method, the route (addresses replaced) and the status are logged."""
        if self.server.quiet:
            return
        sys.stderr.write(f"{self.address_string()} {self._log_line()}\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self._status = str(getattr(code, "value", code))
        self.log_message("%s", "")

    def log_error(self, format: str, *args: Any) -> None:
        # http.server calls this with the offending request line ("Bad request syntax (...)")
        # just before send_error() logs the status through log_request: nothing to add.
        pass

    def _log_line(self) -> str:
        command = getattr(self, "command", None) or "-"
        return f"{command} {_route(getattr(self, 'path', '') or '')} {self._status}"

    _status = "-"

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store" if status >= 400 else "max-age=60")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: object) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, exc: CaduceeError) -> None:
        status = 500
        if isinstance(exc, UsageError | InvalidEntryError):
            status = 400
        elif isinstance(exc, ReadOnlyDirectoryError):
            status = 403
        elif isinstance(exc, EntryNotFoundError):
            status = 404
        elif isinstance(exc, DirectoryUnavailableError):
            status = 503
        elif isinstance(exc, DirectoryError):
            status = 502
        self._json(status, {"error": str(exc)})

    def do_GET(self) -> None:
        if self.headers.get("Content-Length", "0") != "0" or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a body we do not read must not become a request
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        directory = self.server.directory
        try:
            if parts == ["v1", "health"]:
                self._json(200, {"status": "ok", "directory": directory.name})
            elif parts == ["v1", "lookup"]:
                try:
                    params = urllib.parse.parse_qs(url.query, max_num_fields=8)
                except ValueError:
                    raise UsageError("too many query parameters") from None
                args = {}
                for key in ("email", "name", "professional_id", "organisation"):
                    if key in params:
                        args[key] = params[key][0]
                result = directory.search(Query(**args))
                self._json(
                    200,
                    {
                        "directory": directory.name,
                        "entries": [entry_to_json(e) for e in result.entries],
                        "problems": list(result.problems),
                    },
                )
            elif len(parts) == 5 and parts[:2] == ["v1", "entries"] and parts[3] == "certificates":
                wanted = parts[4].removesuffix(".der").lower()
                for entry in directory.search(Query(email=parts[2])).entries:
                    for cert in entry.certificates:
                        if fingerprint(cert) == wanted:
                            self._send(200, der(cert), "application/pkix-cert")
                            return
                raise EntryNotFoundError(f"no certificate {wanted[:16]}... for {parts[2][:80]}")
            else:
                self._json(404, {"error": f"no such resource {url.path[:80]}"})
        except CaduceeError as exc:
            self._error(exc)

    do_HEAD = do_GET

    def _read_body(self) -> bytes | None:
        """Read the whole request body before answering anything, so that the next request
        on this keep-alive connection starts where it should (else the body would be parsed
        as a request line, answered 400 and logged). A body we will not read (no or a bad
        length, too large, chunked) closes the connection after the answer instead."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            return None
        if not 0 < length <= MAX_BODY:
            if length != 0:
                self.close_connection = True
            return None
        try:
            body = self.rfile.read(length)
        except OSError:
            self.close_connection = True
            return None
        if len(body) != length:
            self.close_connection = True
            return None
        return body

    def _body(self, raw: bytes | None) -> dict[str, Any]:
        token = self.server.token
        given = self.headers.get("Authorization", "")
        if token is None:
            raise ReadOnlyDirectoryError("this directory server is read-only")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ReadOnlyDirectoryError("missing or wrong operator token")
        if raw is None:
            raise UsageError(f"request body must be 1 byte to {MAX_BODY} bytes, with a length")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise UsageError("request body is not JSON") from None
        if not isinstance(data, dict):
            raise UsageError("request body must be a JSON object")
        return data

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        directory = self.server.directory
        raw = self._read_body()
        try:
            if path not in ("/v1/entries", "/v1/withdraw"):
                self._json(404, {"error": f"no such resource {path[:80]}"})
                return
            data = self._body(raw)
            if path == "/v1/entries":
                problems: list[str] = []
                entry = entry_from_json(data, "request", problems, "")
                if entry is None or problems:
                    raise InvalidEntryError("; ".join(problems) or "unusable entry")
                stored = directory.publish(entry)
                self._json(200, entry_to_json(stored))
                return
            if "certificate" in data:
                blob = base64.b64decode(str(data["certificate"]), validate=True)
                removed = directory.withdraw(decode_certificate(blob, "request"))
            elif "serial" in data:
                removed = directory.withdraw(serial=parse_serial(str(data["serial"])))
            elif "email" in data:
                removed = directory.withdraw(email=str(data["email"]))
            else:
                raise UsageError("withdraw needs certificate, serial or email")
            self._json(200, {"removed": removed})
        except (binascii.Error, ValueError):
            self._json(400, {"error": "malformed certificate or serial in request"})
        except CaduceeError as exc:
            self._error(exc)


class DirectoryHTTPServer(http.server.ThreadingHTTPServer):
    """Serves one :class:`Directory`; ``token`` (None: read-only) guards publish and withdraw."""

    daemon_threads = True

    def __init__(
        self,
        directory: Directory,
        address: tuple[str, int] = ("127.0.0.1", 8389),
        *,
        token: str | None = None,
        quiet: bool = False,
    ) -> None:
        self.directory = directory
        self.token = token
        self.quiet = quiet
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def start_server(
    directory: Directory, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None
) -> DirectoryHTTPServer:
    """Serve in a background thread (tests, demos); stop: ``shutdown()``, ``server_close()``."""
    server = DirectoryHTTPServer(directory, (host, port), token=token, quiet=True)
    threading.Thread(target=server.serve_forever, name="directory-http", daemon=True).start()
    return server


# --- client ------------------------------------------------------------------------------------


def _unreachable(reason: object, timeout: float) -> str:
    """What happened, in words: refused at once and silent are different faults."""
    if isinstance(reason, ConnectionRefusedError):
        return "unreachable: connection refused (is the directory server running at this address?)"
    if isinstance(reason, TimeoutError):
        return f"no answer (silent for {timeout:g}s)"
    return f"unreachable ({reason})"


class HttpDirectory(Directory):
    """A remote directory reached over HTTP(S); ``token`` is needed only to publish/withdraw."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        name: str | None = None,
        max_results: int = 100,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"not an HTTP directory URL: {url[:80]!r}")
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.timeout = timeout
        self.max_results = max_results
        self._token = token

    def __repr__(self) -> str:
        return f"<HttpDirectory {self.name}>"

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                raw = resp.read(64 * MAX_BODY)
        except urllib.error.HTTPError as exc:
            try:
                message = str(json.loads(exc.read(MAX_BODY)).get("error", exc.reason))
            except (ValueError, AttributeError, OSError):
                message = str(exc.reason)
            finally:
                exc.close()
            error: type[DirectoryError] = DirectoryError
            if exc.code in (401, 403):
                error = ReadOnlyDirectoryError
            elif exc.code == 404:
                error = EntryNotFoundError
            elif exc.code == 400:
                error = InvalidEntryError
            elif exc.code in (502, 503, 504):
                error = DirectoryUnavailableError
            raise error(f"{self.name}: {message[:200]} (HTTP {exc.code})") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DirectoryUnavailableError(
                f"{self.name}: {_unreachable(reason, self.timeout)}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise DirectoryUnavailableError(f"{self.name}: transport failure ({exc})") from None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise DirectoryError(f"{self.name}: the answer is not JSON") from None

    def search(self, query: Query) -> LookupResult:
        params = {k: v for k, v in vars(query).items() if v is not None}
        data = self._request("/v1/lookup?" + urllib.parse.urlencode(params))
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise DirectoryError(f"{self.name}: the answer has no entry list")
        problems = [f"{self.name}: {p}" for p in data.get("problems", []) if isinstance(p, str)]
        entries = []
        for i, item in enumerate(data["entries"][: self.max_results]):
            entry = entry_from_json(item, f"{self.name} entry #{i + 1}", problems, self.name)
            if entry is None:
                continue
            if not query.matches(entry):  # a server must not slip in what was not asked for
                problems.append(
                    f"{self.name}: entry {entry.email} does not match the lookup; dropped"
                )
                continue
            entries.append(entry)
        return LookupResult(tuple(entries), tuple(problems))

    def _publish(self, entry: DirectoryEntry) -> DirectoryEntry:
        data = self._request("/v1/entries", entry_to_json(entry))
        problems: list[str] = []
        stored = entry_from_json(data, self.name, problems, self.name)
        return stored or entry

    def _withdraw_email(self, email: str) -> int:
        return int(self._request("/v1/withdraw", {"email": email}).get("removed", 0))

    def _withdraw_certificates(
        self,
        predicate: _CertPredicate,
        certificate: x509.Certificate | None,
        serial: int | None,
    ) -> int:
        if certificate is not None:
            body = {"certificate": base64.b64encode(der(certificate)).decode()}
        else:
            assert serial is not None
            body = {"serial": format_serial(serial)}
        return int(self._request("/v1/withdraw", body).get("removed", 0))
