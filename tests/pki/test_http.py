"""CRLs fetched from the distribution point served over loopback HTTP; a dead server fails fast."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.pki import ChainedCrlSource, CrlCache, HttpCrlFetcher, validate_certificate
from caducee.pki.errors import CertificateRevokedError, RevocationUnavailableError
from caducee.pki.http import make_server, serve_in_thread

from .conftest import BOB, TwoOperators, at, professional


def test_server_publishes_crl_and_ca_certificate(two_ops: TwoOperators) -> None:
    crl = two_ops.op_a.crl(now=at(1))
    with urllib.request.urlopen(two_ops.op_a.config.crl_url, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/pkix-crl"
        assert resp.read() == crl.public_bytes(Encoding.DER)
    assert two_ops.op_a.config.aia_url is not None
    with urllib.request.urlopen(two_ops.op_a.config.aia_url, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/pkix-cert"
        der = resp.read()
    from cryptography import x509

    assert x509.load_der_x509_certificate(der) == two_ops.op_a.certificate


def test_validation_fetches_crls_over_http_and_sees_a_revocation(two_ops: TwoOperators) -> None:
    pro = professional(two_ops.op_b, BOB, "ec")
    two_ops.crls(at(1))  # publish current CRLs
    fetcher = HttpCrlFetcher(timeout=5)
    result = validate_certificate(
        pro.enc, purpose="encryption", trust=two_ops.trust_a(), crls=fetcher, at=at(2)
    )
    assert result.crl_sources == (two_ops.op_b.config.crl_url,)
    two_ops.op_b.revoke(pro.enc.serial_number, "affiliationChanged", now=at(3))
    with pytest.raises(CertificateRevokedError) as err:
        validate_certificate(
            pro.enc, purpose="encryption", trust=two_ops.trust_a(), crls=HttpCrlFetcher(5),
            at=at(4),
        )  # fmt: skip
    assert err.value.reason == "affiliationChanged"


def test_local_cache_first_then_http(two_ops: TwoOperators) -> None:
    crls = two_ops.crls(at(1))
    source = ChainedCrlSource(CrlCache(crls[:1]), HttpCrlFetcher(timeout=5))
    result = validate_certificate(
        two_ops.alice.enc, purpose="encryption", trust=two_ops.trust_b(), crls=source, at=at(2)
    )
    assert result.crl_sources == ("cache", two_ops.op_a.config.crl_url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_down_gives_a_clear_error(two_ops: TwoOperators) -> None:
    from caducee.pki import CAConfig, CertificateAuthority
    from caducee.pki.ca import generate_ca_key

    from .conftest import PASS, T0

    port = _free_port()
    ca = CertificateAuthority.init_root(
        two_ops.base / "op-down", CAConfig("Down CA", f"http://127.0.0.1:{port}/down.crl"),
        key=generate_ca_key("p256"), passphrase=PASS, now=T0,
    )  # fmt: skip
    pro = professional(ca, BOB, "ec")
    from caducee.pki import TrustStore

    with pytest.raises(RevocationUnavailableError) as err:
        validate_certificate(
            pro.enc, purpose="encryption", trust=TrustStore([ca.certificate]),
            crls=HttpCrlFetcher(timeout=2), at=at(2),
        )  # fmt: skip
    assert f"127.0.0.1:{port}/down.crl unreachable" in str(err.value)
    assert err.value.url == ca.config.crl_url


def test_silent_server_times_out_instead_of_hanging() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = listener.getsockname()[1]
        with pytest.raises(RevocationUnavailableError) as err:
            HttpCrlFetcher(timeout=0.5).fetch(f"http://127.0.0.1:{port}/x.crl")
    assert "timeout 0.5s" in str(err.value)


def test_not_found_and_not_a_crl(two_ops: TwoOperators) -> None:
    with pytest.raises(RevocationUnavailableError, match="HTTP 404"):
        HttpCrlFetcher(timeout=5).fetch(f"{two_ops.server.url}/nothing.crl")
    with pytest.raises(RevocationUnavailableError, match="did not return a CRL"):
        HttpCrlFetcher(timeout=5).fetch(two_ops.op_a.config.aia_url or "")
    with pytest.raises(RevocationUnavailableError, match="not an HTTP URL"):
        HttpCrlFetcher(timeout=5).fetch("ldap://example.test/cn=crl")


def test_serve_a_ca_directory(two_ops: TwoOperators) -> None:
    server = make_server([two_ops.op_b.store.path], "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        # the configured path is served on whatever host:port the server listens on
        with urllib.request.urlopen(f"{server.url}/op-b.crl", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.shutdown()
        server.server_close()
