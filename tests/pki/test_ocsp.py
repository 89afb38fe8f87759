"""The OCSP responder, checked by our parser and by `openssl ocsp` over loopback HTTP."""

from __future__ import annotations

import base64
import pathlib
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from caducee.keys.software import SoftwareKey
from caducee.pki import CAConfig, CertificateAuthority, SigningKeyCASigner
from caducee.pki.ca import generate_ca_key
from caducee.pki.http import ocsp_routes
from caducee.pki.ocsp import OcspResponder, request_for

from .conftest import ALICE, PASS, T0, TwoOperators, at, professional, run


@pytest.fixture(scope="module")
def op_o(two_ops: TwoOperators) -> Iterator[CertificateAuthority]:
    url = two_ops.server.url
    ca = CertificateAuthority.init_subordinate(
        two_ops.base / "op-o",
        CAConfig("Operator O CA", f"{url}/op-o.crl", f"{url}/op-o.crt", f"{url}/op-o/ocsp"),
        two_ops.root, key=generate_ca_key("p256"), passphrase=PASS, now=T0,
    )  # fmt: skip
    two_ops.server.ocsp = ocsp_routes([OcspResponder(ca)])
    yield ca
    two_ops.server.ocsp = {}


def _ask(url: str, request: bytes) -> ocsp.OCSPResponse:
    req = urllib.request.Request(
        url, data=request, headers={"Content-Type": "application/ocsp-request"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/ocsp-response"
        return ocsp.load_der_ocsp_response(resp.read())


def test_issued_certificates_point_at_the_responder(op_o: CertificateAuthority) -> None:
    pro = professional(op_o, ALICE, "ec")
    aia = pro.enc.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp_urls = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
    ]
    assert ocsp_urls == [op_o.config.ocsp_url]


def test_good_revoked_unknown_and_nonce(op_o: CertificateAuthority) -> None:
    assert op_o.config.ocsp_url is not None
    pro = professional(op_o, ALICE, "ec")
    resp = _ask(op_o.config.ocsp_url, request_for(pro.sig, op_o.certificate, nonce=b"n" * 16))
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert resp.serial_number == pro.sig.serial_number
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    pub = op_o.certificate.public_key()
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))

    op_o.revoke(pro.sig.serial_number, "keyCompromise", now=at(1))
    resp = _ask(op_o.config.ocsp_url, request_for(pro.sig, op_o.certificate))
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason is x509.ReasonFlags.key_compromise
    assert resp.revocation_time_utc == at(1)

    # a serial the CA never issued: "unknown" (the request is built by hand for it)
    forged = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            resp.issuer_name_hash, resp.issuer_key_hash, 0x1234, hashes.SHA256()
        )
        .build()
    )
    resp = _ask(op_o.config.ocsp_url, forged.public_bytes(Encoding.DER))
    assert resp.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_bad_requests(two_ops: TwoOperators, op_o: CertificateAuthority) -> None:
    assert op_o.config.ocsp_url is not None
    resp = _ask(op_o.config.ocsp_url, b"\x30\x03garbage")
    assert resp.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    # asking operator O's responder about operator B's certificate
    resp = _ask(op_o.config.ocsp_url, request_for(two_ops.bob.enc, two_ops.op_b.certificate))
    assert resp.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_get_form(op_o: CertificateAuthority) -> None:
    pro = professional(op_o, ALICE, "ec")
    encoded = urllib.parse.quote(base64.b64encode(request_for(pro.enc, op_o.certificate)), safe="")
    with urllib.request.urlopen(f"{op_o.config.ocsp_url}/{encoded}", timeout=5) as r:
        resp = ocsp.load_der_ocsp_response(r.read())
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_responder_with_an_external_signer(op_o: CertificateAuthority) -> None:
    key = op_o.store.load_key(PASS)
    ca = CertificateAuthority.open(
        op_o.store.path, signer=SigningKeyCASigner(SoftwareKey(key, op_o.certificate))
    )
    pro = professional(ca, ALICE, "ec")
    der = OcspResponder(ca).respond(request_for(pro.enc, ca.certificate))
    resp = ocsp.load_der_ocsp_response(der)
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
    from cryptography.hazmat.primitives.asymmetric import ec

    pub = ca.certificate.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


@pytest.mark.interop
def test_openssl_ocsp_client_agrees(
    two_ops: TwoOperators, op_o: CertificateAuthority, openssl: str, tmp_path: pathlib.Path
) -> None:
    assert op_o.config.ocsp_url is not None
    pro = professional(op_o, ALICE, "rsa")
    files = {
        "issuer.pem": op_o.certificate.public_bytes(Encoding.PEM),
        "ca.pem": two_ops.root.certificate.public_bytes(Encoding.PEM)
        + op_o.certificate.public_bytes(Encoding.PEM),
        "good.pem": pro.sig.public_bytes(Encoding.PEM),
        "revoked.pem": pro.enc.public_bytes(Encoding.PEM),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    op_o.revoke(pro.enc.serial_number, "superseded", now=at(1))
    for name, status in (("good.pem", "good"), ("revoked.pem", "revoked")):
        out = run([
            openssl, "ocsp", "-issuer", str(tmp_path / "issuer.pem"),
            "-cert", str(tmp_path / name), "-url", op_o.config.ocsp_url,
            "-CAfile", str(tmp_path / "ca.pem"), "-timeout", "10",
        ]).decode()  # fmt: skip
        assert "Response verify OK" in out
        assert f"{tmp_path / name}: {status}" in out
    assert "Reason: superseded" in out
    # several certificates in one request: refused cleanly, the responder keeps running
    out = run([
        openssl, "ocsp", "-issuer", str(tmp_path / "issuer.pem"),
        "-cert", str(tmp_path / "good.pem"), "-cert", str(tmp_path / "revoked.pem"),
        "-url", op_o.config.ocsp_url, "-CAfile", str(tmp_path / "ca.pem"), "-timeout", "10",
    ], check=False).decode()  # fmt: skip
    assert "malformedrequest" in out.lower()
