"""Capabilities learnt from correspondents' signed messages drive the algorithm choice."""

from __future__ import annotations

import datetime as dt
import os
import pathlib

from click.testing import CliRunner

from caducee.cli.main import cli
from caducee.core.algorithms import ContentCipher, KeyTransport
from caducee.core.capabilities import LEGACY_GPGSM, Capabilities
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.message import ProtectOptions, open_message, protect
from caducee.core.mime.enveloped import decrypt_mime
from caducee.correspondents import CorrespondentStore
from tests.conftest import pem_cert

T = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)
MSG = b"From: alice@op1.test\r\nTo: bob@op2.test\r\nSubject: hi\r\n\r\nhello\r\n"


def signed_by_alice(pki, caps: Capabilities, when: dt.datetime = T) -> bytes:  # type: ignore[no-untyped-def]
    return protect(MSG, signer=pki.alice.signing, recipients=[], signing_time=when,
                   random=os.urandom, options=ProtectOptions(capabilities=caps))  # fmt: skip


def test_learn_keeps_newest_valid_announcement(pki, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    store = CorrespondentStore(tmp_path / "c.json")
    assert store.get("alice@op1.test") is None
    assert store.learn(open_message(signed_by_alice(pki, LEGACY_GPGSM))) == ["alice@op1.test"]
    assert store.get("ALICE@op1.test") == LEGACY_GPGSM
    older = signed_by_alice(pki, Capabilities(), T - dt.timedelta(days=1))
    assert store.learn(open_message(older)) == []
    assert CorrespondentStore(tmp_path / "c.json").get("alice@op1.test") == LEGACY_GPGSM
    assert (tmp_path / "c.json").stat().st_mode & 0o077 == 0


def test_invalid_signature_teaches_nothing(pki, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    tampered = signed_by_alice(pki, LEGACY_GPGSM).replace(b"hello", b"hellO")
    store = CorrespondentStore(tmp_path / "c.json")
    assert store.learn(open_message(tampered)) == []
    assert store.get("alice@op1.test") is None


def test_pinned_profile_wins(pki, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    store = CorrespondentStore(tmp_path / "c.json")
    store.set_fixed("alice@op1.test", "legacy-gpgsm")
    store.learn(open_message(signed_by_alice(pki, Capabilities())))
    assert store.get("alice@op1.test") == LEGACY_GPGSM


def test_cli_verify_remember_then_encrypt_chooses_what_she_reads(pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    (tmp_path / "ca.pem").write_bytes(pem_cert(pki.ca.certificate))
    r = runner.invoke(
        cli,
        ["smime", "verify", "--remember", "--CAfile", str(tmp_path / "ca.pem")],
        input=signed_by_alice(pki, LEGACY_GPGSM),
    )
    assert r.exit_code == 0, r.output
    assert "remembered what alice@op1.test can decrypt" in r.stderr
    (tmp_path / "alice.pem").write_bytes(pem_cert(pki.alice.encryption.certificate))
    r = runner.invoke(cli, ["smime", "encrypt", "--entity", "--recip", str(tmp_path / "alice.pem")],
                      input=b"Content-Type: text/plain\r\n\r\nresults\r\n")  # fmt: skip
    assert r.exit_code == 0, r.output
    report, _ = decrypt_mime(r.stdout_bytes, [pki.alice.encryption])
    assert report.cipher is ContentCipher.AES_256_CBC
    assert report.key_transport is KeyTransport.RSA_PKCS1V15


def test_unknown_correspondent_gets_the_strongest_default(pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bob.pem").write_bytes(pem_cert(pki.bob.encryption.certificate))
    r = CliRunner().invoke(cli, ["smime", "encrypt", "--outform", "der", "--recip",
                                 str(tmp_path / "bob.pem")], input=b"x")  # fmt: skip
    report = decrypt_data(r.stdout_bytes, [pki.bob.encryption])
    assert report.cipher is ContentCipher.AES_256_GCM
    assert report.key_transport is KeyTransport.RSA_OAEP_SHA256
