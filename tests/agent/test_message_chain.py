"""A correspondent under a partner's root whose issuing CA we were never given: the CA
certificate the signed message carries (as Outlook and Thunderbird include it) completes the
path to the root we trust; trust still comes from that root alone."""

from __future__ import annotations

import os
import pathlib

from caducee.agent_trust import PkiValidator
from caducee.core.message import ProtectOptions, protect
from caducee.pki import CAConfig, CertificateAuthority, CrlCache, TrustStore
from caducee.pki.ca import generate_ca_key
from caducee.smime import now

from .conftest import EPOCH, PASS, AgentFactory, Operators, PostOffice, _person


def _partner(base: pathlib.Path) -> tuple[CertificateAuthority, CertificateAuthority]:
    root = CertificateAuthority.init_root(
        base / "root", CAConfig(name="Partner Root", crl_url="http://127.0.0.1:9/root.crl"),
        key=generate_ca_key("p256"), passphrase=PASS, now=EPOCH,
    )  # fmt: skip
    issuing = CertificateAuthority.init_subordinate(
        base / "issuing", CAConfig(name="Partner Issuing CA", crl_url="http://127.0.0.1:9/i.crl"),
        root, key=generate_ca_key("p256"), passphrase=PASS, now=EPOCH,
    )  # fmt: skip
    return root, issuing


def test_a_ca_certificate_carried_by_the_message_completes_the_path(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, tmp_path: pathlib.Path
) -> None:
    root, issuing = _partner(tmp_path)
    durand = _person(issuing, "Jeanne", "Durand", "durand@partner.test", "10005556667", "rsa")
    crls = CrlCache([ca.crl(now=EPOCH) for ca in (ops.op1, ops.op2, root, issuing)])
    trust = TrustStore([ops.op1.certificate, ops.op2.certificate, root.certificate])
    martin = make_agent(ops.martin, validator=PkiValidator(trust, crls))
    message = b"From: durand@partner.test\r\nTo: martin@op1.test\r\nSubject: x\r\n\r\nhi\r\n"
    box = post.mailbox("martin@op1.test")
    for carried in ((issuing.certificate,), ()):
        box.deliver(
            protect(
                message, signer=durand.signing, recipients=[], signing_time=now(),
                random=os.urandom, options=ProtectOptions(extra_certificates=carried),
            )
        )  # fmt: skip
    with_ca, without = (martin.store.get(i) for i in martin.fetch().ids)
    assert with_ca.signature == "valid", with_ca.reason
    assert with_ca.signer_issuer == "Partner Issuing CA"
    # without it, the signature is intact but who signed cannot be checked: not "broken"
    assert without.signature == "untrusted"
    assert "Partner Issuing CA" in (without.reason or "")
    # a carried CA never becomes trusted by itself
    alone = make_agent(ops.martin, validator=PkiValidator(TrustStore([ops.op1.certificate]), crls))
    box.deliver(
        protect(
            message.replace(b"hi", b"again"), signer=durand.signing, recipients=[],
            signing_time=now(),
            random=os.urandom, options=ProtectOptions(extra_certificates=(issuing.certificate,)),
        )
    )  # fmt: skip
    (last,) = alone.fetch().ids
    assert alone.store.get(last).signature == "untrusted"


def test_our_signatures_carry_the_ca_above_the_signer(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, tmp_path: pathlib.Path
) -> None:
    """A caducee user under an operator CA certified by a national root: the operator CA goes
    with every signature, so a correspondent who trusts only the root checks the signer."""
    from caducee.agent import Identity
    from caducee.agent_setup import issuer_chain
    from caducee.agent_trust import StaticFinder

    root, issuing = _partner(tmp_path)
    durand = _person(issuing, "Jeanne", "Durand", "durand@partner.test", "10005556667", "rsa")
    chain = issuer_chain(durand.signing.certificate, [ops.op1.certificate, root.certificate,
                                                      issuing.certificate])  # fmt: skip
    assert chain == (issuing.certificate,)  # the root stays out: the reader has it
    crls = CrlCache([ca.crl(now=EPOCH) for ca in (ops.op1, ops.op2, root, issuing)])
    sender = make_agent(
        durand,
        identity=Identity(durand.email, durand.signing, [durand.encryption], chain=chain),
        finder=StaticFinder([ops.martin.encryption.certificate]),
        validator=PkiValidator(TrustStore([ops.op1.certificate]), crls),
    )
    sender.send(["martin@op1.test"], "résultat", "voir le compte rendu")
    trust = TrustStore([ops.op1.certificate, ops.op2.certificate, root.certificate])
    martin = make_agent(ops.martin, validator=PkiValidator(trust, crls))
    (got,) = martin.fetch().ids
    stored = martin.store.get(got)
    assert (stored.signature, stored.signer_issuer) == ("valid", "Partner Issuing CA")


def test_a_revoked_signer_is_broken_not_merely_unchecked(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, tmp_path: pathlib.Path
) -> None:
    """Its key may be in other hands: a signature by a revoked certificate is not shown as
    intact-but-unchecked."""
    root, issuing = _partner(tmp_path)
    durand = _person(issuing, "Jeanne", "Durand", "durand@partner.test", "10005556667", "rsa")
    issuing.revoke(durand.signing.certificate.serial_number, "keyCompromise", now=EPOCH)
    crls = CrlCache([ca.crl(now=EPOCH) for ca in (ops.op1, ops.op2, root, issuing)])
    trust = TrustStore([ops.op1.certificate, ops.op2.certificate, root.certificate])
    martin = make_agent(ops.martin, validator=PkiValidator(trust, crls))
    post.mailbox("martin@op1.test").deliver(
        protect(
            b"From: durand@partner.test\r\nTo: martin@op1.test\r\nSubject: x\r\n\r\nhi\r\n",
            signer=durand.signing, recipients=[], signing_time=now(), random=os.urandom,
            options=ProtectOptions(extra_certificates=(issuing.certificate,)),
        )
    )  # fmt: skip
    (got,) = martin.fetch().ids
    stored = martin.store.get(got)
    assert stored.signature == "invalid" and "revoked" in (stored.reason or "")
    assert martin.security_summary(stored).startswith("SIGNATURE BROKEN: signer not trusted")
