"""Every file of the bad-input corpus fails with its typed caducee error (manifest.json)."""

from __future__ import annotations

import json
import pathlib

import pytest

from caducee import errors
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.mime.enveloped import decrypt_mime
from caducee.keys.software import SoftwareKey, load_private_key
from tests.core_envelope.conftest import CountingKey

CORPUS = pathlib.Path(__file__).resolve().parent.parent / "data" / "malformed" / "envelope"
MANIFEST: dict[str, dict[str, str]] = json.loads((CORPUS / "manifest.json").read_text())


def _key(kind: str) -> SoftwareKey:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((CORPUS / f"{kind}-cert.pem").read_bytes())
    return SoftwareKey(load_private_key((CORPUS / f"{kind}-key.pem").read_bytes()), cert)


def _decrypt(name: str, key: CountingKey) -> bytes:
    data = (CORPUS / name).read_bytes()
    if name.endswith(".eml"):
        return decrypt_mime(data, [key])[1]
    return decrypt_data(data, [key]).content


def test_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.suffix in (".der", ".eml")}
    assert files == set(MANIFEST)
    assert len(files) >= 40


@pytest.mark.parametrize("name", sorted(n for n, c in MANIFEST.items() if not c["error"]))
def test_valid_samples_decrypt(name: str) -> None:
    """The corpus keys work: the failures below are caused by the mutation, not the key."""
    key = CountingKey(_key(MANIFEST[name]["key"]))
    assert _decrypt(name, key).startswith(b"Content-Type: text/plain\r\n")
    assert key.calls == 1


@pytest.mark.parametrize("name", sorted(n for n, c in MANIFEST.items() if c["error"]))
def test_bad_input_gives_typed_error(name: str) -> None:
    case = MANIFEST[name]
    expected = getattr(errors, case["error"])
    key = CountingKey(_key(case["key"]))
    with pytest.raises(errors.CaduceeError) as info:
        _decrypt(name, key)
    assert type(info.value) is expected, f"{name}: {info.value!r}"
    if case["where"]:
        assert case["where"].lower() in str(info.value).lower()
    if isinstance(info.value, errors.MalformedMessageError):
        assert info.value.where
    assert key.calls <= 1
