"""A professional whose keys live on a card (SoftHSM2), used through the configuration file."""

from __future__ import annotations

import os
import pathlib

import pytest
from cryptography.hazmat.primitives import serialization

from caducee.agent_setup import open_agent
from caducee.config import dump_toml, load_config
from caducee.pki import ProfessionalIdentity

from .conftest import EPOCH, AgentFactory, Operators, PostOffice

pytestmark = pytest.mark.softhsm

LABEL = "dr-card"
USER_PIN = "4321"


def _pem(obj: object) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined,no-any-return]


def test_card_user_reads_and_sends_through_config(
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
    ident = ProfessionalIdentity("Carla", "Carte", "carte@op1.test", "10007778889")
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        issued = issue_card(
            module,
            label=LABEL,
            so_pin="87654321",
            user_pin=USER_PIN,
            issuer=lambda pub, role: ops.op1.issue(pub, ident, role, now=EPOCH),
            kind="rsa2048",
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
                    "email": "carte@op1.test",
                    "card": f"pkcs11:token={LABEL}?module-path={SOFTHSM2_MODULE}",
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
        agent.submitter = post
        agent.sources = {"imap": post.mailbox("carte@op1.test")}
        # she writes first: her signature announces what her card can decrypt
        first = agent.send(["cardio@op2.test"], "Demande", "Merci de me répondre.")
        assert first.state == "sent" and first.encrypted
        (asked,) = cardio.fetch().ids
        assert cardio.store.get(asked).signature == "valid"
        assert cardio.store.capabilities("carte@op1.test") is not None
        cardio.send(["carte@op1.test"], "Pour la carte", "Lu avec la carte.")
        (got,) = agent.fetch().ids
        view = agent.read(got, send_receipt=True)
        assert view.body.strip() == "Lu avec la carte."
        assert view.security.startswith("signed by Bob Coeur <cardio@op2.test>")
        assert (
            agent.read(first.id, send_receipt=True).body.strip() == "Merci de me répondre."
        )  # her Sent copy
    assert len(prompts) == 1  # the PIN is asked once for everything
    assert cardio.fetch().receipts == 1  # her read receipt, signed by the card
    (sent,) = cardio.store.messages("out")
    assert sent.recipients[0].state == "displayed"
