"""SoftHSM2 tokens for the card tests.

Issuing a card (two RSA key pairs) is slow, so each kind of card is issued once per session into
a template token directory, and every test gets its own private copy of it (SoftHSM2 keeps one
directory per token). SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is loaded, so a test must
close every module it opens; the fixture checks nothing is left loaded.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
from collections.abc import Iterator

import PyKCS11
import pytest

from caducee import devpki
from caducee.card import IssuedCard, issue_card
from caducee.card.devissuer import devpki_issuer
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, Pkcs11Module

LABEL = "dr-martin"
SO_PIN = "12345678"
USER_PIN = "1234"


def _require_softhsm() -> None:
    if not os.path.exists(SOFTHSM2_MODULE):
        pytest.skip(f"SoftHSM2 is not installed ({SOFTHSM2_MODULE} missing)")


def _assert_unloaded() -> None:
    loaded = [p for p in PyKCS11.PyKCS11Lib._loaded_libs if p == SOFTHSM2_MODULE]
    assert not loaded, "a previous test left the SoftHSM2 module loaded (close every module)"


def make_token_dir(base: pathlib.Path) -> pathlib.Path:
    """A private SoftHSM2 configuration under ``base``; returns the config file path."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o700)  # token files inherit the umask: keep them private
    tokens = base / "tokens"
    tokens.mkdir(mode=0o700, exist_ok=True)
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    conf.chmod(0o600)
    return conf


@dataclasses.dataclass(frozen=True)
class Card:
    """A card issued on SoftHSM2 for one test, with everything a test needs to use it."""

    conf: pathlib.Path
    label: str
    user_pin: str
    so_pin: str
    issued: IssuedCard
    ca: devpki.TestCA

    def uri(self, extra: str = "") -> str:
        return f"pkcs11:token={self.label}{extra}?module-path={SOFTHSM2_MODULE}"


def _issue_template(
    factory: pytest.TempPathFactory, ca: devpki.TestCA, kind: str, email: str
) -> tuple[pathlib.Path, IssuedCard]:
    _require_softhsm()
    base = factory.mktemp(f"card-{kind}")
    conf = make_token_dir(base)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        _assert_unloaded()
        with Pkcs11Module(SOFTHSM2_MODULE) as module:
            issued = issue_card(
                module,
                label=LABEL,
                so_pin=SO_PIN,
                user_pin=USER_PIN,
                issuer=devpki_issuer(ca, email, "Dr Martin"),
                kind=kind,  # type: ignore[arg-type]
            )
    return base, issued


@pytest.fixture(scope="session")
def rsa_template(tmp_path_factory, pki):  # type: ignore[no-untyped-def]
    return _issue_template(tmp_path_factory, pki.ca, "rsa2048", "martin@op1.test")


@pytest.fixture(scope="session")
def ec_template(tmp_path_factory, pki):  # type: ignore[no-untyped-def]
    return _issue_template(tmp_path_factory, pki.ca, "p256", "martin-ec@op1.test")


def _copy(template, tmp_path, monkeypatch, ca) -> Iterator[Card]:  # type: ignore[no-untyped-def]
    base, issued = template
    dest = tmp_path / "hsm"
    shutil.copytree(base, dest)
    dest.chmod(0o700)
    conf = make_token_dir(dest)  # rewrite the config to point at the copy
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.delenv("CADUCEE_PIN", raising=False)
    monkeypatch.delenv("CADUCEE_PKCS11_MODULE", raising=False)
    _assert_unloaded()
    yield Card(conf, LABEL, USER_PIN, SO_PIN, issued, ca)
    _assert_unloaded()


@pytest.fixture
def rsa_card(rsa_template, tmp_path, monkeypatch, pki):  # type: ignore[no-untyped-def]
    yield from _copy(rsa_template, tmp_path, monkeypatch, pki.ca)


@pytest.fixture
def ec_card(ec_template, tmp_path, monkeypatch, pki):  # type: ignore[no-untyped-def]
    yield from _copy(ec_template, tmp_path, monkeypatch, pki.ca)


@pytest.fixture
def blank_hsm(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """An empty SoftHSM2 (one blank slot) for issuance tests."""
    _require_softhsm()
    conf = make_token_dir(tmp_path / "blank")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.delenv("CADUCEE_PIN", raising=False)
    _assert_unloaded()
    yield conf
    _assert_unloaded()


@pytest.fixture
def module(rsa_card):  # type: ignore[no-untyped-def]
    with Pkcs11Module(SOFTHSM2_MODULE) as mod:
        yield mod
