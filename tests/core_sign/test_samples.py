"""Signatures made by others (asn1crypto-tests, cryptography-vectors).

See tests/data/sign/README.md for where each file comes from.
"""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from caducee.core.algorithms import ContentCipher, Digest, SignatureScheme
from caducee.core.cms.verify import verify_signed_data
from tests.core_sign.conftest import SIGN_DATA


def _load(name: str) -> bytes:
    return (SIGN_DATA / name).read_bytes()


def test_openssl_made_cms() -> None:
    report = verify_signed_data(_load("cms-signed.der"))
    assert report.valid
    assert report.content == b"This is the message to encapsulate in PKCS#7/CMS\r\n"
    (signer,) = report.signers
    assert signer.digest is Digest.SHA256 and signer.scheme is SignatureScheme.RSA_PKCS1V15
    assert signer.signing_time == dt.datetime(2015, 5, 30, 13, 12, 38, tzinfo=dt.UTC)
    assert signer.covered == ("contentType", "signingTime", "messageDigest")
    assert signer.certificate is not None and signer.certificate in report.certificates


def test_pkcs7_style() -> None:
    report = verify_signed_data(_load("pkcs7-signed.der"))
    assert report.valid
    assert "smimeCapabilities" in report.signers[0].covered


def test_indefinite_length_healthcare_report() -> None:
    report = verify_signed_data(_load("cms-signed-indefinite-length.der"))
    assert report.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert len(report.content) == 57310
    (signer,) = report.signers
    assert "signingCertificateV2" in signer.covered
    assert signer.certificate is not None
    assert signer.error == "content digest does not match"


def test_hand_edited_digested_content() -> None:
    report = verify_signed_data(_load("cms-signed-digested.der"))
    assert report.content_type == "1.2.840.113549.1.7.5"
    assert report.signers[0].error == "signature does not verify"


def test_thunderbird_signature() -> None:
    report = verify_signed_data(
        _load("smime-signature-generated-by-thunderbird.p7s"), detached_content=b"not shipped"
    )
    assert report.detached
    (signer,) = report.signers
    assert signer.digest is Digest.SHA512
    assert signer.scheme is SignatureScheme.RSA_PKCS1V15
    assert signer.signing_time == dt.datetime(2022, 2, 12, 19, 15, 45, tzinfo=dt.UTC)
    assert signer.capabilities is not None
    assert signer.capabilities.ciphers == (ContentCipher.AES_256_CBC, ContentCipher.AES_128_CBC)
    assert "1.2.840.113549.3.7" in signer.capabilities.unknown  # des-ede3-cbc, announced
    assert "encrypKeyPref" in signer.covered
    # The signature over the attributes holds (with SHA-512 despite the RSA-SHA256 OID): only
    # the content, which the fixture does not ship, is missing.
    assert signer.error == "content digest does not match"


def test_authenticode_pkcs7_content() -> None:
    report = verify_signed_data(_load("authenticode.der"))
    assert report.valid
    assert report.content_type == "1.3.6.1.4.1.311.2.1.4"


@pytest.mark.interop
@pytest.mark.parametrize(
    "name",
    [
        "cms-signed.der",
        "pkcs7-signed.der",
        "cms-signed-indefinite-length.der",
        "cms-signed-digested.der",
    ],
)
def test_openssl_agrees_on_samples(openssl: str, name: str) -> None:
    proc = subprocess.run(
        [openssl, "cms", "-verify", "-noverify", "-inform", "DER", "-in", str(SIGN_DATA / name)],
        capture_output=True,
        timeout=60,
    )
    assert (proc.returncode == 0) is verify_signed_data(_load(name)).valid
