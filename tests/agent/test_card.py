"""A professional whose keys live on a card (SoftHSM2), used through the configuration file."""

from __future__ import annotations

import pathlib

import pytest

from caducee.agent_setup import open_agent
from caducee.config import load_config
from caducee.pki import ProfessionalIdentity

from .conftest import EPOCH, AgentFactory, Operators, PostOffice, card_user_config

pytestmark = pytest.mark.softhsm

LABEL = "dr-card"
USER_PIN = "4321"


def test_card_user_reads_and_sends_through_config(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    softhsm: str,
):
    from caducee.card import issue_card
    from caducee.keys.pkcs11 import Pkcs11Module

    ident = ProfessionalIdentity("Carla", "Carte", "carte@op1.test", "10007778889")
    with Pkcs11Module(softhsm) as module:
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

    config_file = card_user_config(
        tmp_path,
        ops,
        {"email": "carte@op1.test", "card": f"pkcs11:token={LABEL}?module-path={softhsm}"},
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
