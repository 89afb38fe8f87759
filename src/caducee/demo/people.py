"""The demo's professionals: a signature key pair and a separate encryption key pair each.

On a SoftHSM2 card when the library is installed (issued like ``caducee card issue --ca``: the
signature key generated on the card, the encryption key imported non-extractable, certificates
from the operator CA with the card's RFC 4262 capabilities), software keys otherwise. Why both:
the demo must run on any machine, and show the real card path where it can.

Cards live in a private SoftHSM2 token directory under the demo's temp dir (``SOFTHSM2_CONF``
points there while the demo runs, and is restored after). PINs are random, held in memory only.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from caducee.agent import Identity
from caducee.card import issue_card
from caducee.demo.operators import Operator
from caducee.keys.pkcs11 import (
    SOFTHSM2_MODULE,
    CardSession,
    Pkcs11Module,
    token_capabilities,
)
from caducee.keys.software import SoftwareKey
from caducee.pki import ProfessionalIdentity

__all__ = ["CardShop", "Professional", "issue_software", "softhsm_available"]


def softhsm_available(module: str = SOFTHSM2_MODULE) -> bool:
    return os.path.exists(module)


@dataclasses.dataclass(frozen=True)
class Professional:
    """Who they are (what the CA vouched for), where, and the keys their agent uses."""

    identity: ProfessionalIdentity
    operator: Operator
    keys: Identity
    signature_certificate: x509.Certificate
    encryption_certificate: x509.Certificate
    card: CardSession | None = None

    def __repr__(self) -> str:
        return f"<Professional {self.email}>"

    @property
    def email(self) -> str:
        return self.identity.email

    @property
    def name(self) -> str:
        return self.identity.common_name

    @property
    def label(self) -> str:
        return f"{self.name} <{self.email}>"

    @property
    def card_operations(self) -> int | None:
        """Private-key operations the card performed so far (None for software keys)."""
        return self.card.operations if self.card is not None else None


def issue_software(operator: Operator, identity: ProfessionalIdentity) -> Professional:
    """Two RSA-2048 software key pairs, certified by the operator CA (published as issued)."""
    sig = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sig_cert = operator.ca.issue(sig.public_key(), identity, "signature")
    enc_cert = operator.ca.issue(enc.public_key(), identity, "encryption")
    keys = Identity(
        identity.email,
        SoftwareKey(sig, sig_cert),
        [SoftwareKey(enc, enc_cert)],
        identity.common_name,
    )
    return Professional(identity, operator, keys, sig_cert, enc_cert)


def _digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


class CardShop:
    """Issues SoftHSM2 cards in a private token directory, then opens them for the agents.

    Use as a context manager: on exit every card session is closed, the module unloaded and
    ``SOFTHSM2_CONF`` restored (the token files go with the caller's temp dir).
    """

    def __init__(self, base: pathlib.Path, module_path: str = SOFTHSM2_MODULE) -> None:
        self.base = base
        self.module_path = module_path
        self._pins: dict[str, str] = {}
        self._module: Pkcs11Module | None = None
        self._sessions: list[CardSession] = []
        self._saved_conf: str | None = None

    def __repr__(self) -> str:
        return f"CardShop({self.module_path})"

    def __enter__(self) -> CardShop:
        tokens = self.base / "tokens"
        tokens.mkdir(parents=True, mode=0o700)
        conf = self.base / "softhsm2.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
        self._saved_conf = os.environ.get("SOFTHSM2_CONF")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for session in reversed(self._sessions):
            session.close()
        self._sessions.clear()
        if self._module is not None:
            self._module.close()
            self._module = None
        if self._saved_conf is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = self._saved_conf
        self._pins.clear()

    def issue(
        self, requests: list[tuple[Operator, ProfessionalIdentity, str]]
    ) -> list[Professional]:
        """Initialise a blank card per ``(operator, identity, label)``, then open them all.

        All cards are issued before any is opened: each issuance loads the module afresh
        (SoftHSM2 gives an initialised token a new slot, and only a fresh load shows the next
        blank one), which must not happen under open sessions.
        """
        for operator, identity, label in requests:
            self._pins[label] = self._issue_one(operator, identity, label)
        return [self._open(operator, identity, label) for operator, identity, label in requests]

    def _issue_one(self, operator: Operator, identity: ProfessionalIdentity, label: str) -> str:
        pin = _digits(6)
        with Pkcs11Module(self.module_path) as module:
            slot = module.free_slot()
            capabilities = token_capabilities(
                module.mechanisms(slot), module.token_info(slot).manufacturer
            )
            issued = issue_card(
                module,
                label=label,
                so_pin=_digits(8),  # no PUK kept: the demo never unblocks a card
                user_pin=pin,
                issuer=operator.ca.issuer_for(identity, capabilities=capabilities),
                kind="rsa2048",
            )
        del issued  # with the escrow copy of the encryption key: the demo has no escrow
        return pin

    def _open(self, operator: Operator, identity: ProfessionalIdentity, label: str) -> Professional:
        if self._module is None:
            self._module = Pkcs11Module(self.module_path)
        token = self._module.find_token(label=label)
        card = CardSession(self._module, token, self._pins.pop(label))  # the PIN, given once
        self._sessions.append(card)
        signing = card.signing_key()
        decryption = card.decryption_keys()
        keys = Identity(identity.email, signing, decryption, identity.common_name)
        return Professional(
            identity, operator, keys, signing.certificate, decryption[0].certificate, card
        )
