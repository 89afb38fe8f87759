"""Whole messages: protect (sign, encrypt, header protection) and open (every layer, reported).

This is the sans-I/O heart the CLI, the agent and the APIs call. Clock and randomness come in as
arguments; private keys only through the keys protocols.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Literal

from cryptography import x509

from caducee.core.algorithms import ContentCipher, Digest, SignatureScheme
from caducee.core.capabilities import Capabilities
from caducee.core.cms.decrypt import DecryptedReport
from caducee.core.cms.envelope import Recipient
from caducee.core.cms.verify import SignedReport
from caducee.core.mime import headers
from caducee.core.mime.enveloped import decrypt_mime, encrypt_mime, is_enveloped_mime
from caducee.core.mime.signed import is_signed_mime, sign_mime, verify_mime
from caducee.core.policy import signing_digest
from caducee.errors import MalformedMessageError, UsageError
from caducee.keys.api import DecryptionKey, SigningKey

#: Layers deeper than this are refused (a hostile message could nest thousands).
MAX_LAYERS = 8

Order = Literal["sign-encrypt", "encrypt-sign", "sign-encrypt-sign"]


@dataclasses.dataclass(frozen=True)
class ProtectOptions:
    detached: bool = True
    digest: Digest | None = None  # None: matched to the signer's key (policy.signing_digest)
    scheme: SignatureScheme | None = None
    cipher: ContentCipher = ContentCipher.AES_256_GCM
    capabilities: Capabilities | None = None  # what we announce we can decrypt
    header_protection: bool = True
    order: Order = "sign-encrypt"
    extra_certificates: tuple[x509.Certificate, ...] = ()
    #: The message is canonical MIME already (CRLF everywhere, as the ``email`` package writes
    #: it with ``policy.SMTP``): skip the check, which costs two passes over a large message.
    canonical: bool = False


def protect(
    message: bytes,
    *,
    signer: SigningKey | None,
    recipients: Sequence[Recipient],
    signing_time: dt.datetime,
    random: Callable[[int], bytes],
    options: ProtectOptions = ProtectOptions(),
) -> bytes:
    """Sign and/or encrypt a whole RFC 5322 message; routing headers stay outside.

    With header protection the original Subject, From, To... travel inside the payload and, when
    encrypting, the outer Subject becomes ``[...]``.
    """
    if signer is None and not recipients:
        raise UsageError("nothing to do: give a signer, recipients, or both")
    encrypting = bool(recipients)
    if options.header_protection:
        outer, entity = headers.protect(message, encrypting=encrypting)
    else:
        fields, body = headers.split_message(message)
        outer = [f for f in fields if not headers.is_content_field(f)]
        entity = headers.join([f for f in fields if headers.is_content_field(f)], body)
        entity = entity if any(f.key == "content-type" for f in fields) else b"\r\n" + body

    def sign(data: bytes) -> bytes:
        assert signer is not None
        return sign_mime(
            data,
            signer,
            signing_time=signing_time,
            detached=options.detached,
            digest=options.digest or signing_digest(signer.certificate),
            scheme=options.scheme,
            capabilities=options.capabilities,
            extra_certificates=options.extra_certificates,
            canonical=options.canonical,
        )

    def encrypt(data: bytes, canonical: bool = True) -> bytes:
        return encrypt_mime(
            data, recipients, random=random, cipher=options.cipher, canonical=canonical
        )

    # One step per statement: each intermediate entity is released as soon as the next layer
    # exists (a nested call would keep the innermost one alive until the end).
    if signer is not None and encrypting:
        if options.order == "sign-encrypt":
            entity = sign(entity)
            entity = encrypt(entity)
        elif options.order == "encrypt-sign":
            entity = encrypt(entity, canonical=options.canonical)
            entity = sign(entity)
        else:
            entity = sign(entity)
            entity = encrypt(entity)
            entity = sign(entity)
    elif signer is not None:
        entity = sign(entity)
    else:
        entity = encrypt(entity, canonical=options.canonical)
    # The entity brings its own MIME-Version; keep exactly one, and copy the entity only once.
    skip = entity.index(b"\n") + 1 if entity.startswith(b"MIME-Version:") else 0
    outer = [f for f in outer if f.key != "mime-version"]
    return b"".join(
        [*(f.line() for f in outer), b"MIME-Version: 1.0\r\n", memoryview(entity)[skip:]]
    )


@dataclasses.dataclass(frozen=True)
class Layer:
    """One cryptographic layer met while opening, outermost first."""

    kind: Literal["signed", "encrypted"]
    signed: SignedReport | None = None
    decrypted: DecryptedReport | None = None

    def describe(self) -> str:
        if self.decrypted is not None:
            d = self.decrypted
            how = d.key_transport.value if d.key_transport else (d.key_agreement or "?")
            return f"encrypted: {d.cipher.label}, key {how}, {d.recipient_count} recipient(s)"
        assert self.signed is not None
        parts = []
        for s in self.signed.signers:
            who = certificate_label(s.certificate) if s.certificate else "unknown signer"
            state = "valid" if s.valid else f"INVALID ({s.error})"
            parts.append(f"{who}: {s.scheme.value}/{s.digest.label} {state}")
        mode = "detached" if self.signed.detached else "opaque"
        return f"signed ({mode}): " + "; ".join(parts or ["no signer"])


def certificate_label(cert: x509.Certificate) -> str:
    """'Common Name <e-mail>' for people, from the subject and the subjectAltName."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else cert.subject.rfc4514_string()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        emails = [
            str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
        ]
    return f"{cn} <{emails[0]}>" if emails else cn


@dataclasses.dataclass(frozen=True)
class OpenedMessage:
    layers: tuple[Layer, ...]
    entity: bytes = dataclasses.field(repr=False)  # the innermost MIME entity (never shown)
    headers: headers.HeaderView = dataclasses.field(repr=False)  # Subject is content too

    @property
    def encrypted(self) -> bool:
        return any(layer.kind == "encrypted" for layer in self.layers)

    @property
    def signed(self) -> bool:
        return any(layer.kind == "signed" for layer in self.layers)

    @property
    def signature_valid(self) -> bool:
        """Signed, and every signature in every layer verifies."""
        reports = [layer.signed for layer in self.layers if layer.signed is not None]
        return bool(reports) and all(r.valid for r in reports)

    @property
    def signers(self) -> tuple[x509.Certificate, ...]:
        return tuple(
            s.certificate
            for layer in self.layers
            if layer.signed is not None
            for s in layer.signed.signers
            if s.certificate is not None
        )


def open_message(
    message: bytes,
    *,
    keys: Sequence[DecryptionKey] = (),
    extra_certificates: Sequence[x509.Certificate] = (),
    max_layers: int = MAX_LAYERS,
    stop_after: int | None = None,
) -> OpenedMessage:
    """Peel every S/MIME layer, in whatever order they were applied, and report each.

    Signature failures are reported in the layers (the caller decides); structural problems,
    missing keys and decryption failures raise. ``stop_after`` peels only that many layers.
    """
    outer = headers.header_fields(message)  # the body is not copied
    current = message
    layers: list[Layer] = []
    while stop_after is None or len(layers) < stop_after:
        if is_enveloped_mime(current):
            if not keys:
                raise UsageError("the message is encrypted: a decryption key is needed")
            decrypted, current = decrypt_mime(current, keys)
            layers.append(Layer("encrypted", decrypted=decrypted))
        elif is_signed_mime(current):
            report, current = verify_mime(current, extra_certificates=extra_certificates)
            layers.append(Layer("signed", signed=report))
        else:
            break
        if len(layers) > max_layers:
            raise MalformedMessageError(f"more than {max_layers} nested layers", "S/MIME layers")
    view = headers.unprotect(outer, current) if layers else headers.unprotect(outer, b"\r\n")
    return OpenedMessage(tuple(layers), current, view)
