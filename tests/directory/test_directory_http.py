"""The HTTP directory: JSON lookups, DER downloads, operator token, hostile or silent servers."""

from __future__ import annotations

import base64
import http.server
import json
import pathlib
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from caducee.directory.api import (
    DirectoryUnavailableError,
    InvalidEntryError,
    ReadOnlyDirectoryError,
    der,
)
from caducee.directory.http import DirectoryHTTPServer, HttpDirectory, start_server
from caducee.directory.sqlite import SqliteDirectory
from caducee.errors import DirectoryError
from caducee.serials import format_serial


@pytest.fixture
def served(tmp_path: pathlib.Path, pki) -> Iterator[tuple[DirectoryHTTPServer, SqliteDirectory]]:
    backend = SqliteDirectory(tmp_path / "served.sqlite", name="op1")
    backend.publish(pki.alice.signing.certificate, professional_id="10001234567")
    backend.publish(pki.alice.encryption.certificate, professional_id="10001234567")
    server = start_server(backend, token="s3cret")
    yield server, backend
    server.shutdown()
    server.server_close()
    backend.close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def test_json_lookup_and_der_download(served, pki) -> None:
    server, _ = served
    status, ctype, body = get(f"{server.url}/v1/lookup?professional_id=10001234567")
    assert (status, ctype) == (200, "application/json")
    data = json.loads(body)
    (entry,) = data["entries"]
    assert entry["email"] == "alice@op1.test" and data["problems"] == []
    usages = {c["serial"]: c["usage"] for c in entry["certificates"]}
    assert usages[format_serial(pki.alice.signing.certificate.serial_number)] == ["signature"]
    assert usages[format_serial(pki.alice.encryption.certificate.serial_number)] == ["encryption"]
    for cert in entry["certificates"]:
        status, ctype, body = get(server.url + cert["href"])
        assert (status, ctype) == (200, "application/pkix-cert")
        assert body in (der(pki.alice.signing.certificate), der(pki.alice.encryption.certificate))
    status, _, body = get(f"{server.url}/v1/entries/alice@op1.test/certificates/{'0' * 64}.der")
    assert status == 404 and "no certificate" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/v1/lookup", 400, "needs"),
        ("/v1/lookup?email=", 400, "needs"),
        ("/v1/lookup?name=%00x", 400, "invalid name"),
        ("/v1/nothing", 404, "no such resource"),
        ("/v1/lookup?" + "&".join(f"a{i}=1" for i in range(20)), 400, "too many"),
    ],
)
def test_bad_requests_get_json_errors(served, path: str, status: int, message: str) -> None:
    server, _ = served
    got, ctype, body = get(server.url + path)
    assert (got, ctype) == (status, "application/json")
    assert message in json.loads(body)["error"]


def test_changes_need_the_operator_token(served, pki) -> None:
    server, _ = served
    for client in (HttpDirectory(server.url), HttpDirectory(server.url, token="wrong")):
        with pytest.raises(ReadOnlyDirectoryError, match=r"token.*HTTP 403"):
            client.withdraw(email="alice@op1.test")
        with pytest.raises(ReadOnlyDirectoryError):
            client.publish(pki.bob.signing.certificate)
    assert len(HttpDirectory(server.url).lookup(email="alice@op1.test")) == 1


def test_read_only_server_refuses_changes(tmp_path: pathlib.Path, pki) -> None:
    with SqliteDirectory(tmp_path / "ro.sqlite") as backend:
        server = start_server(backend)  # no token: read-only
        try:
            with pytest.raises(ReadOnlyDirectoryError, match="read-only"):
                HttpDirectory(server.url, token="anything").publish(pki.bob.signing.certificate)
        finally:
            server.shutdown()
            server.server_close()


def test_server_rejects_bad_entries(served) -> None:
    server, _ = served
    req = urllib.request.Request(
        f"{server.url}/v1/entries",
        data=json.dumps(
            {"email": "x@y.test", "common_name": "X", "certificates": [{"der": "bm90IGEgY2VydA=="}]}
        ).encode(),
        headers={"Authorization": "Bearer s3cret", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    with info.value as exc:
        assert exc.code == 400
        assert "unreadable certificate" in json.loads(exc.read())["error"]


def test_malformed_stored_certificate_is_reported_through_http(served, pki) -> None:
    server, backend = served
    db = sqlite3.connect(backend.path)
    with db:
        db.execute("INSERT INTO certificates VALUES ('bad', 'alice@op1.test', '1', x'3003020101')")
    db.close()
    result = HttpDirectory(server.url, name="op1-http").lookup(email="alice@op1.test")
    assert len(result.entries[0].certificates) == 2
    (problem,) = result.problems
    assert problem.startswith("op1-http: op1 entry alice@op1.test certificate #")
    assert "unreadable certificate" in problem


class _Hostile(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[tuple[str, type[_Hostile]]]:
    handler = type("H", (_Hostile,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_hostile_answers_never_crash_a_lookup(hostile, pki) -> None:
    url, handler = hostile
    client = HttpDirectory(url, name="evil")
    handler.body = b"<html>not json"
    with pytest.raises(DirectoryError, match=r"^evil: the answer is not JSON"):
        client.lookup(email="alice@op1.test")
    handler.body = b'{"entries": 3}'
    with pytest.raises(DirectoryError, match="no entry list"):
        client.lookup(email="alice@op1.test")
    good = {
        "email": "alice@op1.test",
        "common_name": "Alice",
        "certificates": [{"der": base64.b64encode(der(pki.alice.signing.certificate)).decode()}],
    }
    entries = [
        "just a string",
        {"email": 42, "common_name": "x"},
        {"email": "alice@op1.test", "common_name": "A", "certificates": [{"der": "%%%"}]},
        {"email": "alice@op1.test", "common_name": "A", "certificates": [{}]},
        {"email": "alice@op1.test", "common_name": "A", "professional_id": "12"},
        good | {"email": "bob@op2.test"},  # alice's certificate under bob's address
        good,
        {  # well-formed, but not what was asked: dropped
            "email": "bob@op2.test",
            "common_name": "Bob",
            "certificates": [{"der": base64.b64encode(der(pki.bob.signing.certificate)).decode()}],
        },
    ]
    handler.body = json.dumps({"entries": entries, "problems": ["upstream hiccup", 7]}).encode()
    result = client.lookup(email="alice@op1.test")
    assert [e.email for e in result.entries] == ["alice@op1.test"]
    text = "\n".join(result.problems)
    assert "evil: upstream hiccup" in text
    assert "not a JSON object" in text and "not strings" in text
    assert text.count("not base64 DER") == 2
    assert "11 digits" in text and "not bob@op2.test" in text
    assert "evil: entry bob@op2.test does not match the lookup; dropped" in text


def test_a_silent_server_is_an_error_within_the_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)  # accepts connections (kernel backlog) and never answers
    try:
        client = HttpDirectory(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1)
        with pytest.raises(DirectoryUnavailableError, match="silent for 1s"):
            client.lookup(email="a@b.test")
    finally:
        listener.close()


def test_publish_withdraw_round_trip_over_http(served, pki) -> None:
    server, backend = served
    client = HttpDirectory(server.url, token="s3cret")
    stored = client.publish(pki.bob.encryption.certificate, profession="Infirmier")
    assert stored.profession == "Infirmier" and stored.source == client.name
    assert backend.lookup(email="bob@op2.test").entries[0].profession == "Infirmier"
    with pytest.raises(InvalidEntryError):
        client.publish(pki.ca.certificate)
    assert client.withdraw(serial=pki.bob.encryption.certificate.serial_number) == 1
    assert backend.lookup(email="bob@op2.test").entries == ()
