"""The demo's story: a referral across two operators, read, acknowledged, and what is refused.

Everything below is the production code path — the agent, the PKI, the directories, SMTP and
Maildirs — on embedded defaults in a private temp dir that is removed at the end. The only file
kept is the encrypted wire message, for ``openssl cms``. Each step checks what it shows: if the
outcome is not the expected one the demo stops with :class:`DemoFailure` (a non-zero exit).
"""

from __future__ import annotations

import contextlib
import pathlib
import tempfile
import time
from collections.abc import Callable, Mapping

from rich.console import Console

from caducee.agent import Agent, AgentPolicy, RecipientsRefusedError, SendResult
from caducee.core.mime import headers as mime_headers
from caducee.demo import letter
from caducee.demo.narrator import Narrator
from caducee.demo.operators import Federation, build_federation
from caducee.demo.people import CardShop, Professional, issue_software, softhsm_available
from caducee.demo.relay import OperatorRelay
from caducee.demo.tamper import inject, tampered_copies
from caducee.demo.wire import envelope_summary
from caducee.errors import CaduceeError, UsageError
from caducee.keys.pkcs11 import SOFTHSM2_MODULE
from caducee.mail.api import Envelope
from caducee.pki import ProfessionalIdentity
from caducee.store import MessageStore

__all__ = ["DemoFailure", "run_demo"]

MARTIN = ProfessionalIdentity(
    "Dr", "Martin", "dr-martin@op1.test", "10000000011", "General practitioner"
)
PETIT = ProfessionalIdentity(
    "Dr", "Petit", "dr-petit@op1.test", "10000000022", "General practitioner (replacement)"
)
CARDIO = ProfessionalIdentity(
    "Dr", "Cardiologist", "cardiologist@op2.test", "10000000033", "Cardiologist"
)
NOBODY = "dr-unknown@op2.test"


class DemoFailure(CaduceeError):
    """A step of the demo did not end as it must (a regression, not a user error)."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(f"demo step failed: {what}")


def _card_ops(person: Professional, before: int | None) -> str:
    """' (n card operations)' since ``before``; empty for software keys."""
    now = person.card_operations
    if now is None or before is None:
        return ""
    n = now - before
    return f" ({n} card operation{'s' if n != 1 else ''})"


class _World:
    """The temp dir's contents once set up: federation, people, their agents, the relay."""

    def __init__(self, fed: Federation, people: list[Professional], data: pathlib.Path) -> None:
        self.fed = fed
        self.martin, self.petit, self.cardio = people
        services = {op.domain: op.mail for op in fed.operators}
        self.relay = OperatorRelay(services)
        validator = fed.validator()
        finder = fed.finder()
        self.agents: dict[str, Agent] = {}
        self.stores: list[MessageStore] = []
        for person in people:
            store = MessageStore(data / person.email / "messages.sqlite")
            self.stores.append(store)
            self.agents[person.email] = Agent(
                identity=person.keys,
                finder=finder,
                validator=validator,
                submitter=self.relay,
                sources={"inbox": person.operator.mail.source(person.email)},
                store=store,
                account=person.email,
                policy=AgentPolicy(),
            )

    def agent(self, person: Professional) -> Agent:
        return self.agents[person.email]

    def close(self) -> None:
        for store in self.stores:
            store.close()


def run_demo(
    console: Console,
    out_dir: pathlib.Path,
    *,
    software_keys: bool = False,
    before_cleanup: Callable[[pathlib.Path], None] | None = None,
) -> None:
    """Run the whole story; only ``out_dir/message.eml`` (ciphertext) remains afterwards.

    ``before_cleanup`` is given the temp dir just before it is removed (tests look inside it
    for plaintext).
    """
    say = Narrator(console)
    started = time.monotonic()
    say.title("caducee demo — signed and encrypted mail between two operators")
    with contextlib.ExitStack() as stack:
        tmp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caducee-demo-")))
        fed = _setup_operators(say, tmp)
        stack.callback(fed.close)
        people = _setup_people(say, fed, tmp, stack, software_keys)
        world = _World(fed, people, tmp / "agents")
        stack.callback(world.close)
        sent, wire = _send_referral(say, world, out_dir)
        _receive(say, world, sent)
        _receipt(say, world, sent)
        _refusal(say, world)
        _tampering(say, world, wire)
        if before_cleanup is not None:
            before_cleanup(tmp)
    say.step("Clean-up")
    _expect(not tmp.exists(), f"{tmp} was not removed")
    say.ok("temp dir removed: CA keys, cards, directories, Maildirs, message stores")
    say.ok(f"kept only {out_dir / 'message.eml'} (encrypted); try:")
    say.wire([f"openssl cms -cmsout -print -in {out_dir / 'message.eml'}"])
    say.done(f"Demo complete in {time.monotonic() - started:.1f} s.")


def _setup_operators(say: Narrator, tmp: pathlib.Path) -> Federation:
    say.step("Two operators under a national health root: CA, directory, CRLs, mail service")
    fed = build_federation(
        tmp / "operators", [("op1", "Operator 1 Health CA"), ("op2", "Operator 2 Health CA")]
    )
    fed.start_mail()
    say.info(f"national root: {fed.root.config.name} (the one trust anchor of every agent)")
    for op in fed.operators:
        say.info(
            f"{op.slug}: CA '{op.ca_name}' (certified by the root), SQLite directory,"
            f" SMTP service for @{op.domain} on {op.mail.host}:{op.mail.port} (Maildirs)"
        )
    return fed


def _setup_people(
    say: Narrator,
    fed: Federation,
    tmp: pathlib.Path,
    stack: contextlib.ExitStack,
    software_keys: bool,
) -> list[Professional]:
    say.step("Three professionals, each with a signature key pair and a separate encryption pair")
    op1, op2 = fed.operator("op1"), fed.operator("op2")
    wanted = [(op1, MARTIN, "dr-martin"), (op1, PETIT, "dr-petit"), (op2, CARDIO, "cardiology")]
    if software_keys or not softhsm_available():
        why = "--software-keys" if software_keys else f"SoftHSM2 not installed ({SOFTHSM2_MODULE})"
        say.info(f"keys: SOFTWARE keys in memory ({why})")
        people = [issue_software(op, ident) for op, ident, _ in wanted]
    else:
        say.info(f"keys: SoftHSM2 cards ({SOFTHSM2_MODULE}), in a private token directory;")
        say.info("signature key generated on the card, encryption key imported non-extractable")
        shop = stack.enter_context(CardShop(tmp / "softhsm"))
        people = shop.issue(wanted)
    for person in people:
        where = f"card '{person.card.token.label}'" if person.card else "software keys"
        say.info(f"{person.label}: {where}, certified by {person.operator.ca_name}")
        say.wire(
            [
                f"signature cert {person.signature_certificate.serial_number:x}",
                f"encryption cert {person.encryption_certificate.serial_number:x}",
            ]
        )
    for op in fed.operators:
        mine = [p for p in people if p.operator is op]
        found = sum(len(op.directory.lookup(email=p.email).entries) for p in mine)
        _expect(found == len(mine), f"{op.slug} directory is missing someone")
        say.info(f"{op.slug} directory: {found} professional(s), published by the CA as it issued")
    crls = fed.publish_crls()
    say.info(f"each CA wrote its CRL ({len(crls)} files, nothing revoked yet)")
    return people


def _send_referral(say: Narrator, world: _World, out_dir: pathlib.Path) -> tuple[SendResult, bytes]:
    martin, petit, cardio = world.martin, world.petit, world.cardio
    say.step("Dr Martin (op1) sends a referral with a PDF to the cardiologist (op2), cc Dr Petit")
    agent = world.agent(martin)
    found, problems = agent.check_recipients([cardio.email, petit.email])
    _expect(not problems, f"recipients refused: {problems}")
    for address, verdict in found:
        say.ok(f"{address}: encryption certificate found and valid (issued by {verdict.issuer})")
    before = martin.card_operations
    sent = agent.send(
        [cardio.email],
        letter.SUBJECT,
        letter.BODY,
        cc=[petit.email],
        attachments=[letter.lab_result_pdf()],
    )
    _expect(sent.state == "sent" and sent.encrypted, f"send ended {sent.state}")
    say.ok(
        f"signed with her signature key, encrypted for {len(sent.recipients)} recipients and"
        f" for herself (sent copy readable), delivered by SMTP{_card_ops(martin, before)}"
    )
    say.info("read receipt (MDN) requested")
    assert world.relay.last is not None
    envelope, wire = world.relay.last
    owners = {
        p.encryption_certificate.serial_number: f"{p.name}'s encryption cert"
        for p in (martin, petit, cardio)
    }
    _show_wire(say, envelope, wire, owners)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "message.eml"
    target.write_bytes(wire)
    say.info(f"saved the encrypted wire message to {target}")
    return sent, wire


def _show_wire(say: Narrator, envelope: Envelope, wire: bytes, owners: Mapping[int, str]) -> None:
    say.info(f"what the network sees ({len(wire):,} bytes):")
    rcpts = ", ".join(envelope.recipients)
    lines = [f"MAIL FROM:<{envelope.sender}>  RCPT TO: {rcpts}"]
    fields, _ = mime_headers.split_message(wire)
    for field in fields:
        value = field.value()
        lines.append(f"{field.name}: {value}" if value else f"{field.name}:")
    say.wire(lines)
    say.info("the encrypted body reveals only:")
    say.wire(envelope_summary(wire, owners) or ["(an S/MIME envelope)"])


def _receive(say: Narrator, world: _World, sent: SendResult) -> None:
    cardio = world.cardio
    say.step("The cardiologist's agent fetches and checks the message")
    agent = world.agent(cardio)
    before = cardio.card_operations
    report = agent.fetch()
    _expect(report.new == 1 and report.valid == 1, f"fetch gave {report}")
    how = _card_ops(cardio, before) or " (software key)"
    say.ok(f"decrypted with the cardiologist's encryption key{how}")
    stored = agent.store.get(report.ids[0])
    say.ok("signature verified; signer's path checked at signing time, with revocation (CRLs)")
    summary = agent.security_summary(stored)
    _expect(summary.startswith(f"signed by {world.martin.name}"), summary)
    say.ok(summary)
    say.info(f"signing time: {stored.signing_time}")
    say.step("The cardiologist reads it (decrypted again; a signed read receipt goes back)")
    before = cardio.card_operations
    view = agent.read(stored.id, send_receipt=True)
    say.info(f"From: {view.headers.get('from')}")
    say.info(f"Subject: {view.headers.get('subject')} (protected: inside the encryption)")
    first = next((line for line in view.body.splitlines() if line.strip()), "")
    say.info(f"text: {first} …")
    attachments = [p for p in view.parts if p.attachment]
    _expect([p.filename for p in attachments] == [letter.ATTACHMENT_NAME], "attachment not listed")
    for part in attachments:
        say.info(f"attachment: {part.filename} ({part.content_type}, {part.size:,} bytes)")
    _expect(agent.store.get(stored.id).mdn_sent == "displayed", "no read receipt sent")
    say.ok(
        f"signed read receipt 'displayed' sent to {world.martin.email}"
        f"; decrypted again and receipt signed{_card_ops(cardio, before)}"
    )


def _receipt(say: Narrator, world: _World, sent: SendResult) -> None:
    say.step("Dr Martin's agent fetches the read receipt; her sent copy stays readable")
    agent = world.agent(world.martin)
    report = agent.fetch()
    _expect(report.receipts == 1, f"expected one receipt, got {report}")
    say.ok("receipt verified: signed by the recipient it names")
    states = {r.address: r.state for r in agent.store.get(sent.id).recipients}
    _expect(states.get(world.cardio.email) == "displayed", f"states {states}")
    for address, state in states.items():
        say.info(f"{address}: {state}")
    mine = agent.read(sent.id, send_receipt=True)
    _expect(mine.headers.get("subject") == letter.SUBJECT, "her sent copy did not open")
    say.ok(f"her sent copy opens with her own encryption key: {mine.headers.get('subject')!r}")


def _refusal(say: Narrator, world: _World) -> None:
    say.step(f"Dr Martin writes to {NOBODY}, who has no valid certificate")
    agent = world.agent(world.martin)
    before = world.relay.last
    sent_before = len(agent.store.messages("out"))
    try:
        agent.send([world.cardio.email, NOBODY], "Follow-up", "A second opinion, please.")
    except RecipientsRefusedError as exc:
        say.flag(f"refused before anything left: {exc}")
    else:
        raise DemoFailure("demo step failed: a message without a valid certificate was sent")
    _expect(world.relay.last is before, "something was submitted")
    _expect(len(agent.store.messages("out")) == sent_before, "something was stored as sent")
    say.ok("nothing was submitted, not even to the recipient who has a certificate")


def _tampering(say: Narrator, world: _World, wire: bytes) -> None:
    say.step("Someone tampers with mail on its way to the cardiologist")
    agent = world.agent(world.cardio)
    copies = tampered_copies(wire, world.martin, world.cardio)
    for description, data in copies:
        inject(world.relay, world.martin.email, world.cardio.email, data)
        say.info(description)
    report = agent.fetch()
    _expect(report.new == len(copies) and report.valid == 0, f"tampered mail: {report}")
    for message in report.ids:
        summary = agent.security_summary(agent.store.get(message))
        _expect(not summary.startswith("signed by"), f"tampered mail trusted: {summary}")
        say.flag(f"flagged, not trusted: {summary}")
    say.ok("both kept in the store and flagged; neither is shown as signed by Dr Martin")


def check_out_dir(path: str) -> pathlib.Path:
    out = pathlib.Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out-dir {out} exists and is not a directory")
    return out
