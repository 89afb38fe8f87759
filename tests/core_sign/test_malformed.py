"""Bad input: a typed caducee error or an invalid report, never another exception."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.core.cms.sign import sign_data
from caducee.core.cms.verify import SignedReport, verify_signed_data
from caducee.core.mime.canon import to_crlf
from caducee.core.mime.signed import sign_mime, verify_mime
from caducee.errors import (
    CaduceeError,
    MalformedMessageError,
    MissingCertificateError,
    SignatureError,
    UnsupportedAlgorithmError,
)
from tests.conftest import TestPKI as PKI
from tests.core_sign.conftest import MALFORMED, T0

SIGNED_CONTENT = b"Content-Type: text/plain\r\n\r\nhello\r\n"
M = MalformedMessageError
U = UnsupportedAlgorithmError
#: file -> (exception class, fragment of its message) or (None, the signer's error; "" = valid)
EXPECTED: dict[str, tuple[type[CaduceeError] | None, str]] = {
    "empty.der": (M, "truncated"),
    "truncated.der": (M, "declared length is larger than the data"),
    "truncated-header.der": (M, "declared length"),
    "wrong-outer-length.der": (M, "declared length"),
    "huge-declared-length.der": (M, "declared length"),
    "nine-byte-length.der": (M, "declared length"),
    "wrong-tag-contentinfo.der": (M, "at ContentInfo: expected a SEQUENCE"),
    "wrong-tag-signerinfos.der": (M, "at SignedData.signerInfos: expected a SET"),
    "not-signed-data.der": (M, "is not signedData"),
    "trailing-garbage.der": (M, "trailing data"),
    "absurd-nesting.der": (M, "nesting is too deep"),
    "pss-without-parameters.der": (M, "at SignerInfo[0]"),
    "bad-signing-time.der": (M, "SignerInfo[0].signedAttrs.signingTime"),
    "unknown-digest-oid.der": (U, "2.16.840.1.101.3.4.2.127"),
    "sha224-digest.der": (U, "2.16.840.1.101.3.4.2.4"),
    "unknown-signature-oid.der": (U, "1.2.840.113549.1.1.99"),
    "signature-over-other-content.der": (None, "content digest does not match"),
    "tampered-signed-attribute.der": (None, "signature does not verify"),
    "missing-certificate.der": (None, "signer certificate not found"),
    "duplicate-message-digest.der": (None, "messageDigest appears more than once"),
    "no-message-digest.der": (None, "lack contentType or messageDigest"),
    "content-type-mismatch.der": (None, "content type attribute does not match"),
    "no-signer.der": (None, "no signer"),
    "deep-unknown-attribute.der": (None, ""),  # covered but never decoded: still valid
    "mime-no-boundary.eml": (M, "without a boundary"),
    "mime-signature-part-missing.eml": (M, "multipart/signed"),
    "mime-bad-base64.eml": (M, "ContentInfo"),
    "mime-signature-truncated.eml": (M, "ContentInfo"),
    "mime-opaque-garbage.eml": (M, "ContentInfo"),
    "mime-tampered-content.eml": (None, "content digest does not match"),
}


def _verify(name: str, data: bytes) -> SignedReport:
    if name.endswith(".eml"):
        return verify_mime(data)[0]
    return verify_signed_data(data)


def test_corpus_is_complete() -> None:
    on_disk = {p.name for p in MALFORMED.iterdir() if p.suffix in (".der", ".eml")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(name: str) -> None:
    data = (MALFORMED / name).read_bytes()
    error_class, fragment = EXPECTED[name]
    if error_class is not None:
        with pytest.raises(error_class) as info:
            _verify(name, data)
        assert fragment in str(info.value)
        assert "\n" not in str(info.value)
        return
    report = _verify(name, data)
    if not fragment:
        assert report.valid
        return
    assert not report.valid
    with pytest.raises((SignatureError, MissingCertificateError), match=fragment):
        report.raise_for_invalid()


# -- properties -----------------------------------------------------------------------------------

_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(
    content=st.binary(max_size=2000),
    who=st.sampled_from(["alice", "carol", "dave"]),
    digest=st.sampled_from([Digest.SHA256, Digest.SHA384, Digest.SHA512]),
    detached=st.booleans(),
)
def test_round_trip_property(
    pki: PKI, content: bytes, who: str, digest: Digest, detached: bool
) -> None:
    key = getattr(pki, who).signing
    der = sign_data(content, key, signing_time=T0, digest=digest, detached=detached)
    report = verify_signed_data(der, detached_content=content if detached else None)
    assert report.valid and report.content == content


@pytest.fixture(scope="module")
def signed_samples(pki: PKI) -> dict[str, bytes]:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    content = SIGNED_CONTENT
    return {
        "der": sign_data(content, pki.alice.signing, signing_time=when, detached=False),
        "der-pss": sign_data(
            content,
            pki.bob.signing,
            signing_time=when,
            scheme=SignatureScheme.RSA_PSS,
            detached=False,
        ),
        "mime": sign_mime(content, pki.carol.signing, signing_time=when),
        "mime-opaque": sign_mime(content, pki.dave.signing, signing_time=when, detached=False),
    }


@_SETTINGS
@given(
    kind=st.sampled_from(["der", "der-pss", "mime", "mime-opaque"]),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=4,
    ),
    cut=st.none() | st.integers(min_value=0),
)
def test_mutations_only_raise_caducee_errors(
    signed_samples: dict[str, bytes],
    kind: str,
    edits: list[tuple[int, int]],
    cut: int | None,
) -> None:
    data = bytearray(signed_samples[kind])
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    mutated = bytes(data)
    try:
        if kind.startswith("mime"):
            report, content = verify_mime(mutated)
        else:
            report = verify_signed_data(mutated)
            content = report.content
    except CaduceeError as exc:
        assert str(exc)
        return
    if report.valid:
        # Unsigned bytes may change (certificate signature, base64 whitespace, headers), but a
        # valid report never hands out content other than what was signed.
        assert to_crlf(content) == SIGNED_CONTENT
