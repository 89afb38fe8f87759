"""An installation in keystore mode: signature key on the card, encryption key in a local
keystore that the card opens (SoftHSM2), all through the configuration file."""

from __future__ import annotations

import pathlib

import pytest

from caducee.agent_setup import open_agent
from caducee.config import load_config, parse_config
from caducee.errors import ConfigError
from caducee.keys.software import SoftwareKey
from caducee.pki import ProfessionalIdentity

from .conftest import EPOCH, AgentFactory, Operators, PostOffice, card_user_config

LABEL = "dr-keystore"
USER_PIN = "4321"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@pytest.mark.softhsm
def test_keystore_mode_user_reads_and_sends_through_config(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    softhsm: str,
):
    from caducee.card import issue_card
    from caducee.keys.pkcs11 import Pkcs11Module

    ident = ProfessionalIdentity("Karl", "Coffre", "coffre@op1.test", "10007778880")
    with Pkcs11Module(softhsm) as module:
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
    config_file = card_user_config(
        tmp_path,
        ops,
        {
            "email": "coffre@op1.test",
            "card": f"pkcs11:token={LABEL}?module-path={softhsm}",
            "encryption_key": "keystore",
            "keystore": "coffre.keystore",  # relative to the configuration file
        },
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
