"""The agent over real servers: SMTP submission (STARTTLS + AUTH) relaying between two
operators, delivery over LMTP into Dovecot, and IMAP (STARTTLS) fetches."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from caducee.agent import Agent, AgentPolicy, Attachment, Identity
from caducee.store import MessageStore

from .conftest import Operators, Person

servers = pytest.importorskip("caducee.mail.servers", reason="mail servers module missing")

USERS = {
    "op1.test": {"martin@op1.test": "martin-pw"},
    "op2.test": {"cardio@op2.test": "cardio-pw"},
}


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    reason = servers.dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    tls = servers.make_tls_files(tmp_path_factory.mktemp("agent-tls"))
    with servers.MailNetwork(USERS, tls=tls) as net:
        yield net


def _agent(net: object, ops: Operators, person: Person, base: pathlib.Path) -> Agent:
    return Agent(
        identity=Identity(person.email, person.signing, [person.encryption]),
        finder=ops.address_book(),
        validator=ops.validator(),
        submitter=net.submitter(person.email),  # type: ignore[attr-defined]
        sources={"imap": net.mailbox(person.email)},  # type: ignore[attr-defined]
        store=MessageStore(base / person.email / "messages.sqlite"),
        policy=AgentPolicy(),
    )


def test_exchange_over_smtp_lmtp_dovecot_imap(
    network: object, ops: Operators, tmp_path: pathlib.Path
):
    martin = _agent(network, ops, ops.martin, tmp_path)
    cardio = _agent(network, ops, ops.cardio, tmp_path)
    try:
        pdf = b"%PDF-1.4 " + bytes(range(256)) * 64
        sent = martin.send(
            ["cardio@op2.test"],
            "Bilan",
            "Compte rendu en pièce jointe.",
            attachments=[Attachment("bilan.pdf", pdf)],
        )
        assert sent.state == "sent"
        report = cardio.fetch()
        assert (report.new, report.valid) == (1, 1)
        view = cardio.read(report.ids[0], send_receipt=True)
        assert view.security.startswith("signed by Alice Martin <martin@op1.test>")
        assert view.body.strip() == "Compte rendu en pièce jointe."
        exported = cardio.export(report.ids[0], tmp_path / "out")
        assert [p.read_bytes() for p in exported] == [pdf]
        assert cardio.fetch().new == 0  # UIDs: nothing fetched twice

        receipts = martin.fetch()
        assert receipts.receipts == 1
        assert martin.store.get(sent.id).recipients[0].state == "displayed"
    finally:
        for agent in (martin, cardio):
            agent.store.close()
            for source in agent.sources.values():
                source.close()  # type: ignore[attr-defined]
