"""An installation in keystore mode: signature key on the card, encryption key in a local
keystore that the card opens (SoftHSM2), all through the configuration file."""

from __future__ import annotations

import os
import pathlib

import pytest
from cryptography.hazmat.primitives import serialization

from caducee.agent_setup import open_agent
from caducee.config import dump_toml, load_config, parse_config
from caducee.errors import ConfigError
from caducee.keys.software import SoftwareKey
from caducee.pki import ProfessionalIdentity

from .conftest import EPOCH, AgentFactory, Operators, PostOffice

LABEL = "dr-keystore"
USER_PIN = "4321"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _pem(obj: object) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.softhsm
def test_keystore_mode_user_reads_and_sends_through_config(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
):
    from caducee.card import issue_card
    from caducee.keys.pkcs11 import SOFTHSM2_MODULE, Pkcs11Module

    if not os.path.exists(SOFTHSM2_MODULE):
        pytest.skip(f"SoftHSM2 is not installed ({SOFTHSM2_MODULE} missing)")
    tokens = tmp_path / "hsm" / "tokens"
    tokens.mkdir(parents=True, mode=0o700)
    conf = tmp_path / "hsm" / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.delenv("CADUCEE_PIN", raising=False)
    ident = ProfessionalIdentity("Karl", "Coffre", "coffre@op1.test", "10007778880")
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        issued = issue_card(
            module,
            label=LABEL,
            so_pin="87654321",
            user_pin=USER_PIN,
            issuer=lambda pub, role: ops.op1.issue(pub, ident, role, now=EPOCH),
            kind="rsa2048",
            encryption_key="keystore",
            keystore=tmp_path / "coffre.keystore",
        )

    cardio = make_agent(ops.cardio)
    cardio.finder.add(issued.encryption_certificate)  # type: ignore[attr-defined]
    files = {
        "anchors.pem": _pem(ops.op1.certificate) + _pem(ops.op2.certificate),
        "op1.crl": _pem(ops.op1.crl(now=EPOCH)),
        "op2.crl": _pem(ops.op2.crl(now=EPOCH)),
        "book.pem": _pem(ops.cardio.encryption.certificate),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        dump_toml(
            {
                "data_dir": str(tmp_path / "data"),
                "address_book": ["book.pem"],
                "identity": {
                    "email": "coffre@op1.test",
                    "card": f"pkcs11:token={LABEL}?module-path={SOFTHSM2_MODULE}",
                    "encryption_key": "keystore",
                    "keystore": "coffre.keystore",  # relative to the configuration file
                },
                "trust": {
                    "anchors": ["anchors.pem"],
                    "crls": ["op1.crl", "op2.crl"],
                    "fetch_crls": False,
                },
            }
        )
    )
    prompts: list[str] = []

    def pin(label: str) -> str:
        prompts.append(label)
        return USER_PIN

    with open_agent(load_config(config_file), pin_callback=pin) as session:
        agent = session.agent
        keys = agent.identity.decryption_keys
        assert len(keys) == 1 and isinstance(keys[0], SoftwareKey)  # opened from the keystore
        assert keys[0].certificate == issued.encryption_certificate
        signing = agent.identity.signing_key
        assert signing is not None and not isinstance(signing, SoftwareKey)  # still the card
        card = signing.card  # type: ignore[attr-defined]
        assert card.operations == 1  # opening the keystore: one card operation
        agent.submitter = post
        agent.sources = {"imap": post.mailbox("coffre@op1.test")}
        first = agent.send(["cardio@op2.test"], "Demande", "Merci de me répondre.")
        assert first.state == "sent" and first.encrypted
        (asked,) = cardio.fetch().ids
        assert cardio.store.get(asked).signature == "valid"
        cardio.send(["coffre@op1.test"], "Pour le coffre", "Lu avec le coffre.")
        before = card.operations
        (got,) = agent.fetch().ids
        view = agent.read(got, send_receipt=True)
        assert view.body.strip() == "Lu avec le coffre."
        assert view.security.startswith("signed by Bob Coeur <cardio@op2.test>")
        assert (
            agent.read(first.id, send_receipt=True).body.strip() == "Merci de me répondre."
        )  # her Sent copy
        assert card.operations - before == 1  # reading cost only the read receipt's signature
    assert len(prompts) == 1  # the PIN is asked once for everything


def _identity(tmp_path: pathlib.Path, **identity: object) -> dict[str, object]:
    return {"data_dir": str(tmp_path), "identity": {"email": "a@op1.test", **identity}}


def test_keystore_setting_is_read_and_checked(tmp_path: pathlib.Path) -> None:
    card = f"pkcs11:token=x?module-path={MODULE}"
    base = tmp_path / "config.toml"
    config = parse_config(_identity(tmp_path, card=card), base)
    assert config.identity.encryption_key == "card" and config.identity.keystore is None
    config = parse_config(
        _identity(
            tmp_path,
            card=card,
            encryption_key="keystore",
            keystore="ks.json",
            keystore_history=["old.json"],
        ),
        base,
    )
    assert config.identity.encryption_key == "keystore"
    assert config.identity.keystore == tmp_path / "ks.json"
    assert config.identity.keystore_history == (tmp_path / "old.json",)
    bad = [
        (_identity(tmp_path, card=card, encryption_key="usb"), 'must be "card" or'),
        (_identity(tmp_path, card=card, encryption_key="keystore"), "needs 'card'"),
        (_identity(tmp_path, card=card, keystore="ks.json"), "only used with"),
        (
            _identity(
                tmp_path,
                encryption_key="keystore",
                keystore="ks.json",
                decryption_key="k.pem",
                decryption_cert="c.pem",
            ),
            "needs 'card'",
        ),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_config(data, base)
