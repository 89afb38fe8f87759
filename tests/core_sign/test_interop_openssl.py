"""Interop with the real `openssl cms`, both ways (RFC 5652 / RFC 8551 peers)."""

from __future__ import annotations

import pytest
from asn1crypto import cms

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.core.capabilities import Capabilities
from caducee.core.cms.sign import sign_data
from caducee.core.cms.verify import verify_signed_data
from caducee.core.mime.canon import to_crlf, to_lf
from caducee.core.mime.signed import sign_mime, verify_mime
from tests.conftest import TestPKI as PKI
from tests.conftest import run
from tests.core_sign.conftest import SIGNERS, T0, SignerFiles, WriteFile, identity

pytestmark = pytest.mark.interop

ENTITY = (
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"Compte rendu de consultation\r\n\r\nBien confraternellement,\r\n"
)


def _ids(value: object) -> str:
    return str(getattr(value, "value", getattr(value, "label", value)))


def _verify_der(openssl: str, ca_file: str) -> list[str]:
    return [openssl, "cms", "-verify", "-inform", "DER", "-binary", "-CAfile", ca_file]


# -- ours -> openssl ------------------------------------------------------------------------------


@pytest.mark.parametrize("detached", [True, False], ids=["multipart-signed", "pkcs7-mime"])
@pytest.mark.parametrize("digest", [Digest.SHA256, Digest.SHA384, Digest.SHA512], ids=_ids)
@pytest.mark.parametrize(("who", "scheme"), SIGNERS, ids=_ids)
def test_openssl_verifies_our_smime(
    pki: PKI,
    openssl: str,
    files: WriteFile,
    ca_file: str,
    who: str,
    scheme: SignatureScheme,
    digest: Digest,
    detached: bool,
) -> None:
    message = sign_mime(
        ENTITY,
        identity(pki, who).signing,
        signing_time=T0,
        detached=detached,
        digest=digest,
        scheme=scheme,
        capabilities=Capabilities(),
    )
    path = files("signed.eml", b"To: x@op2.test\r\nSubject: t\r\n" + message)
    out = run([openssl, "cms", "-verify", "-in", path, "-CAfile", ca_file])
    assert to_crlf(out) == ENTITY


def test_openssl_verifies_our_der(pki: PKI, openssl: str, files: WriteFile, ca_file: str) -> None:
    for who, scheme in SIGNERS:
        der = sign_data(ENTITY, identity(pki, who).signing, signing_time=T0, scheme=scheme)
        sig = files("sig.der", der)
        content = files("content.bin", ENTITY)
        out = run([*_verify_der(openssl, ca_file), "-in", sig, "-content", content])
        assert out == ENTITY
        printed = run([openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", sig])
        assert b"signingCertificateV2" in printed
        pem = run([openssl, "cms", "-cmsout", "-inform", "DER", "-in", sig, "-outform", "PEM"])
        assert pem.startswith(b"-----BEGIN CMS-----")
        pem_in = files("sig.pem", pem)
        pem_cmd = [openssl, "cms", "-verify", "-inform", "PEM", "-binary", "-CAfile", ca_file]
        pem_out = run([*pem_cmd, "-in", pem_in, "-content", content])
        assert pem_out == ENTITY


def test_openssl_rejects_our_signature_on_other_content(
    pki: PKI,
    openssl: str,
    files: WriteFile,
    ca_file: str,
) -> None:
    """Guards the test above against an openssl that accepts anything."""
    import subprocess

    der = sign_data(ENTITY, pki.alice.signing, signing_time=T0)
    sig = files("sig.der", der)
    other = files("other.bin", ENTITY.replace(b"Compte", b"Compta"))
    proc = subprocess.run(
        [*_verify_der(openssl, ca_file), "-in", sig, "-content", other],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode != 0


# -- openssl -> ours ------------------------------------------------------------------------------


def _openssl_sign(
    openssl: str,
    signer_files: SignerFiles,
    files: WriteFile,
    who: list[str],
    extra: list[str],
    content: bytes = ENTITY,
) -> bytes:
    cmd = [openssl, "cms", "-sign", "-in", files("in.eml", content)]
    for name in who:
        cert, key = signer_files(name)
        cmd += ["-signer", cert, "-inkey", key]
    return run(cmd + extra)


OPENSSL_VARIANTS = {
    "detached-lf": (["alice"], [], True),
    "detached-crlf": (["alice"], ["-crlfeol"], True),
    "opaque": (["bob"], ["-nodetach"], False),
    "opaque-crlf": (["dave"], ["-nodetach", "-crlfeol", "-md", "sha512"], False),
    "sha384": (["alice"], ["-md", "sha384"], True),
    "sha512-ecdsa-p384": (["dave"], ["-md", "sha512"], True),
    "ecdsa-p256": (["carol"], [], True),
    "pss": (
        ["bob"],
        ["-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:digest"],
        True,
    ),
    "pss-max-salt-sha384": (["bob"], ["-md", "sha384", "-keyopt", "rsa_padding_mode:pss"], True),
    "two-signers": (["alice", "carol"], [], True),
    "streamed": (["carol"], ["-stream"], True),
}


@pytest.mark.parametrize("variant", list(OPENSSL_VARIANTS))
def test_we_verify_openssl_smime(
    pki: PKI,
    openssl: str,
    files: WriteFile,
    signer_files: SignerFiles,
    variant: str,
) -> None:
    who, extra, detached = OPENSSL_VARIANTS[variant]
    message = _openssl_sign(openssl, signer_files, files, who, extra, to_lf(ENTITY))
    report, entity = verify_mime(message)
    assert report.valid, report.signers
    assert report.detached is detached
    assert to_crlf(entity) == ENTITY
    assert {s.certificate for s in report.signers} == {
        identity(pki, name).signing.certificate for name in who
    }  # openssl sorts the SignerInfos (DER SET OF)
    assert all(s.signing_time is not None for s in report.signers)
    if "pss" in variant:
        assert report.signers[0].scheme is SignatureScheme.RSA_PSS
    # the same message with the signed text altered must not verify
    altered = message.replace(b"Bien confraternellement", b"Bien cordialement,,,,,,")
    if altered != message and detached:
        assert not verify_mime(altered)[0].valid


def test_we_verify_openssl_der_variants(
    pki: PKI,
    openssl: str,
    files: WriteFile,
    signer_files: SignerFiles,
) -> None:
    cases = {
        "der-opaque": ["-nodetach", "-binary", "-outform", "DER"],
        "ber-indefinite": ["-nodetach", "-binary", "-outform", "DER", "-stream"],
        "no-attributes": ["-nodetach", "-binary", "-outform", "DER", "-noattr"],
        "key-id": ["-nodetach", "-binary", "-outform", "DER", "-keyid"],
        "sha1-legacy": ["-nodetach", "-binary", "-outform", "DER", "-md", "sha1"],
    }
    for name, extra in cases.items():
        der = _openssl_sign(openssl, signer_files, files, ["carol"], extra)
        report = verify_signed_data(der)
        assert report.valid, (name, report.signers)
        assert report.content == ENTITY, name
        if name == "no-attributes":
            assert report.signers[0].covered == ()
            assert report.signers[0].signing_time is None
        if name == "sha1-legacy":  # accepted when verifying what older peers send
            assert report.signers[0].digest is Digest.SHA1
        if name == "ber-indefinite":
            assert der[1] == 0x80  # indefinite length indeed
    # -nocerts: the certificate must come from the caller
    der = _openssl_sign(
        openssl, signer_files, files, ["alice"], ["-binary", "-outform", "DER", "-nocerts"]
    )
    report = verify_signed_data(der, detached_content=ENTITY)
    assert report.signers[0].error == "signer certificate not found"
    report = verify_signed_data(
        der, detached_content=ENTITY, extra_certificates=[pki.alice.signing.certificate]
    )
    assert report.valid
    assert cms.ContentInfo.load(der)["content"]["certificates"].native is None
