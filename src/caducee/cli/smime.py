"""``caducee smime``: sign, verify, encrypt, decrypt — shaped like ``openssl cms``."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from typing import Any

import click
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from caducee import smime
from caducee.certfiles import load_certificate, load_certificates
from caducee.core import pem as cmspem
from caducee.core.algorithms import ContentCipher, Digest, KeyTransport, SignatureScheme
from caducee.core.capabilities import LEGACY_GPGSM, Capabilities
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data
from caducee.core.cms.sign import sign_data
from caducee.core.cms.verify import ERR_DIGEST, SignedReport, verify_signed_data
from caducee.core.message import (
    Layer,
    OpenedMessage,
    ProtectOptions,
    certificate_label,
    open_message,
)
from caducee.core.mime import headers
from caducee.core.mime.canon import to_crlf
from caducee.core.mime.enveloped import encrypt_mime
from caducee.core.mime.signed import sign_mime
from caducee.core.policy import choose_encryption, signing_digest
from caducee.correspondents import CorrespondentStore, certificate_emails
from caducee.errors import CaduceeError, PolicyError, SignatureError, TrustError, UsageError
from caducee.keys.api import SigningKey

from .keyargs import PASSIN_HELP, load_decryptors, load_signer, read_file

FORMATS = click.Choice(["smime", "pem", "der"], case_sensitive=False)
CIPHERS = click.Choice([c.label for c in ContentCipher], case_sensitive=False)
MESSAGE_FIELDS = ("from", "to", "subject", "date", "message-id")
NOT_CHECKED = "signature intact, signer identity NOT checked"
INKEY_HELP = (
    "Key: PEM/DER, PKCS#12, or a pkcs11: URI (card PIN: --passin, else the URI's pin-source=, "
    "else the CADUCEE_PIN environment variable, else a prompt on the terminal)."
)
BINARY_OPTION = click.option(
    "--binary",
    is_flag=True,
    help="With --outform der|pem: take the input as it is (no CRLF line endings), as openssl's "
    "-binary; for binary content such as a PDF.",
)
TEXT_OPTION = click.option(
    "--text",
    is_flag=True,
    help="Input is plain text without MIME headers: wrap it as text/plain first.",
)
IN_HELP = "Input file ('-': standard input)."
FORCE_HELP = "Overwrite an existing --out file."


_CAMEL = {  # cryptography's KeyUsage attribute names, as RFC 5280 spells them
    "digital_signature": "keyUsage digitalSignature",
    "content_commitment": "keyUsage nonRepudiation",
    "key_encipherment": "keyUsage keyEncipherment",
    "key_agreement": "keyUsage keyAgreement",
}


class UnusableCertificateError(PolicyError):
    """A certificate given for signing or encryption cannot serve that purpose (usage, CA,
    validity): refused before anything is produced, naming the file."""


@click.group("smime")
def group() -> None:
    """Sign, verify, encrypt and decrypt S/MIME messages (options follow ``openssl cms``)."""


def _read(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else read_file(path, "input")


def _check_binary(binary: bool, outform: str) -> None:
    if binary and outform == "smime":
        raise UsageError("--binary goes with --outform der or pem (S/MIME output is MIME text)")


def _check_out(out: str | None, in_: str | None, force: bool) -> None:
    """Refuse, before any work (or PIN prompt), an --out that would lose data or cannot be
    written: the input itself, an existing file without --force, a missing directory."""
    if out in (None, "-"):
        return
    assert out is not None
    if in_ not in (None, "-") and os.path.exists(out) and os.path.samefile(out, str(in_)):
        raise UsageError(f"cannot write {out}: it is the input file (--in); choose another --out")
    if os.path.exists(out) and not force:
        raise UsageError(f"cannot write {out}: the file exists (give --force to overwrite it)")
    if os.path.isdir(out):
        raise UsageError(f"cannot write {out}: it is a directory")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UsageError(f"cannot write {out}: no such directory")


def _write(path: str, data: bytes) -> None:
    """Write atomically (temporary file 0600 in the same directory, then rename)."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, FileNotFoundError):
            raise UsageError(f"cannot write {path}: no such directory") from None
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def _say(text: str) -> None:
    click.echo(text, err=True)


def _is_message(data: bytes) -> bool:
    """An RFC 5322 message (routing headers to keep outside) rather than a bare MIME entity."""
    try:
        fields, _ = headers.split_message(data[: headers.MAX_HEADER_BYTES])
    except CaduceeError:  # not parsable as headers: plain content
        return False
    return any(f.key in MESSAGE_FIELDS for f in fields)


def _keyopts(values: Sequence[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for value in values:
        name, sep, arg = value.partition(":")
        if not sep:
            raise UsageError(f"--keyopt {value}: expected NAME:VALUE")
        opts[name] = arg.lower()
    return opts


def _extra_certs(paths: Sequence[str]) -> list[x509.Certificate]:
    return [c for p in paths for c in load_certificates(read_file(p, "certificate file"), p)]


def _der_in(data: bytes, inform: str) -> bytes:
    return cmspem.decode(data) if inform == "pem" else data


def _inform(data: bytes, inform: str) -> str:
    """PEM armour (ours, openssl's, gpgsm's --armor) is recognised whatever --inform says."""
    return "pem" if inform == "smime" and cmspem.looks_armoured(data) else inform


def _mime_input(data: bytes, path: str, text: bool) -> bytes:
    """The entity to protect: ``--text`` wraps it as text/plain (as openssl's -text); without
    it, input with no header block is refused rather than turned into a message no reader
    (caducee included) can parse."""
    if text:
        return b"Content-Type: text/plain\r\n\r\n" + to_crlf(data)
    try:
        fields, _ = headers.split_message(data[: headers.MAX_HEADER_BYTES])
    except CaduceeError:
        fields = []
    if not fields:
        where = "the input" if path == "-" else path
        raise UsageError(
            f"no MIME headers in {where}: add them, or use --text to wrap it as text/plain"
        )
    return data


def _check_certificate(cert: x509.Certificate, path: str, purpose: str) -> None:
    """Refuse a certificate that cannot serve ``purpose`` now: a CA's, out of its validity
    period, or whose key usage forbids it."""
    from caducee.pki.errors import WrongUsageError
    from caducee.pki.profiles import Purpose
    from caducee.pki.validate import check_usage

    label = f"{path} ({certificate_label(cert)})"
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        ca = False
    if ca:
        raise UnusableCertificateError(
            f"{label}: a CA certificate, not a person's: it cannot be used for {purpose}"
        )
    now = smime.now()
    if now > cert.not_valid_after_utc:
        raise UnusableCertificateError(
            f"{label}: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now < cert.not_valid_before_utc:
        raise UnusableCertificateError(
            f"{label}: not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    try:
        check_usage(cert, Purpose.parse(purpose))
    except WrongUsageError as exc:
        missing = ", ".join(_CAMEL.get(m, m) for m in exc.missing)
        raise UnusableCertificateError(
            f"{label}: not usable for {purpose} (its certificate lacks {missing})"
        ) from None
    except TrustError as exc:
        raise UnusableCertificateError(f"{label}: {exc}") from None


def _der_out(der: bytes, outform: str) -> bytes:
    return cmspem.encode(der) if outform == "pem" else der


# -- sign ---------------------------------------------------------------------------------------


@group.command()
@click.option(
    "--in", "in_", default="-", show_default=True, metavar="FILE",
    help="Message (or MIME entity) to sign ('-': standard input).",
)  # fmt: skip
@click.option(
    "--out", default="-", show_default=True, metavar="FILE",
    help="Where to write the signed message ('-': standard output).",
)  # fmt: skip
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.option("--signer", "signer_cert", metavar="FILE", help="Signer certificate (PEM/DER).")
@click.option("--inkey", required=True, metavar="KEY", help=INKEY_HELP)
@click.option("--passin", help=PASSIN_HELP)
@click.option("--certfile", multiple=True, help="Extra certificates to include.")
@click.option(
    "--md", type=click.Choice(["sha256", "sha384", "sha512"]), help="Default: fits the key."
)
@click.option("--keyopt", multiple=True, help="rsa_padding_mode:pss|pkcs1")
@click.option("--detached/--opaque", default=True, show_default=True)
@click.option("--nodetach", is_flag=True, help="Same as --opaque (openssl's name).")
@click.option("--outform", type=FORMATS, default="smime", show_default=True)
@BINARY_OPTION
@TEXT_OPTION
@click.option("--entity", is_flag=True, help="Sign the input as a bare MIME entity.")
@click.option(
    "--no-header-protection", is_flag=True,
    help="Do not copy the message headers (Subject...) inside the signed part (RFC 9788).",
)  # fmt: skip
def sign(**o: Any) -> None:
    """Sign a message: multipart/signed (detached) or signed-data (opaque).

    The input must be a MIME message or entity (with headers); give --text for plain text.
    """
    _check_out(o["out"], o["in_"], o["force"])
    _check_binary(o["binary"], o["outform"])
    signer, chain, capabilities = load_signer(o["inkey"], o["signer_cert"], o["passin"])
    where = o["signer_cert"] or (
        "the card's certificate" if o["inkey"].startswith("pkcs11:") else o["inkey"]
    )
    _check_certificate(signer.certificate, where, "signature")
    scheme = _scheme(_keyopts(o["keyopt"]), signer)
    digest = Digest.from_name(o["md"]) if o["md"] else signing_digest(signer.certificate)
    detached = o["detached"] and not o["nodetach"]
    extra = [*chain, *_extra_certs(o["certfile"])]
    data = _read(o["in_"])
    if o["text"] or o["outform"] == "smime":
        data = _mime_input(data, o["in_"], o["text"])
    now = smime.now()
    if o["outform"] != "smime":
        der = sign_data(
            data if o["binary"] else to_crlf(data),
            signer,
            signing_time=now,
            digest=digest,
            scheme=scheme,
            detached=detached,
            capabilities=capabilities,
            extra_certificates=extra,
        )
        _write(o["out"], _der_out(der, o["outform"]))
        return
    if _is_message(data) and not o["entity"]:
        options = ProtectOptions(
            detached=detached,
            digest=digest,
            scheme=scheme,
            capabilities=capabilities,
            header_protection=not o["no_header_protection"],
            extra_certificates=tuple(extra),
        )
        out = smime.protect(data, signer=signer, options=options, signing_time=now)
    else:
        out = sign_mime(
            data,
            signer,
            signing_time=now,
            detached=detached,
            digest=digest,
            scheme=scheme,
            capabilities=capabilities,
            extra_certificates=extra,
        )
    _write(o["out"], out)


def _scheme(opts: dict[str, str], signer: SigningKey) -> SignatureScheme | None:
    mode = opts.pop("rsa_padding_mode", None)
    if opts:
        raise UsageError(f"--keyopt {', '.join(opts)}: not supported when signing")
    if mode is None:
        return None
    wanted = {"pss": SignatureScheme.RSA_PSS, "pkcs1": SignatureScheme.RSA_PKCS1V15}.get(mode)
    if wanted is None:
        raise UsageError(f"--keyopt rsa_padding_mode:{mode}: use pss or pkcs1")
    if wanted not in signer.signature_schemes():
        raise UsageError(f"the signer key cannot sign with {wanted.value}")
    return wanted


# -- verify -------------------------------------------------------------------------------------


def _trust_options(command: Any) -> Any:
    """--CAfile/--trust/--crl/--noverify, shared by verify and decrypt (same verdict)."""
    for option in reversed(
        [
            click.option(
                "--CAfile", "cafile", metavar="FILE",
                help="Trusted CA certificates: check the signer's chain (no revocation check "
                "unless --crl is given too).",
            ),
            click.option(
                "--trust", multiple=True, metavar="FILE",
                help="Trust anchors (PEM/DER/PKCS#7): full path validation with revocation.",
            ),
            click.option(
                "--crl", multiple=True, metavar="FILE",
                help="CRL files (else fetched from the distribution point).",
            ),
            click.option(
                "--noverify", is_flag=True,
                help="Do not check who the signer is (only that the signature is intact).",
            ),
        ]
    ):  # fmt: skip
        command = option(command)
    return command


@group.command()
@click.option("--in", "in_", default="-", show_default=True, metavar="FILE", help=IN_HELP)
@click.option("--out", metavar="FILE", help="Write the signed content here.")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.option("--content", metavar="FILE", help="Detached content (with --inform pem|der).")
@click.option("--inform", type=FORMATS, default="smime", show_default=True)
@click.option(
    "--certfile", multiple=True, metavar="FILE",
    help="Extra certificates (signer, intermediates).",
)  # fmt: skip
@_trust_options
@click.option("--remember", is_flag=True, help="Remember what valid signers can decrypt.")
def verify(**o: Any) -> None:
    """Verify every signature of a signed message and check who signed it.

    Without --CAfile or --trust the signer's identity cannot be checked: the command then
    fails (exit 4) unless --noverify is given.
    """
    _check_out(o["out"], o["in_"], o["force"])
    data = _read(o["in_"])
    extra = _extra_certs(o["certfile"])
    inform = _inform(data, o["inform"])
    opened: OpenedMessage | None = None
    if inform == "smime":
        opened = open_message(data, extra_certificates=extra)
        reports = [layer.signed for layer in opened.layers if layer.signed is not None]
        if not reports:
            raise SignatureError("the message is not signed")
        content = opened.entity
        described = [_describe(layer) for layer in opened.layers]
    else:
        detached = read_file(o["content"], "content") if o["content"] else None
        report = _verify_der(_der_in(data, inform), detached, extra)
        reports = [report]
        content = report.content
        described = [_describe(Layer("signed", signed=report))]
    for report in reports:
        report.raise_for_invalid()
    lines, verdict = _trust_verdict(reports, o, extra)
    for line in described + lines:
        _say(line)
    if o["remember"] and opened is not None:
        _remember(opened)
    if o["out"]:
        _write(o["out"], content)
    _say(verdict)


def _verify_der(der: bytes, detached: bytes | None, extra: list[x509.Certificate]) -> SignedReport:
    report = verify_signed_data(der, detached_content=detached, extra_certificates=extra)
    if (
        detached is not None
        and any(s.error == ERR_DIGEST for s in report.signers)
        and b"\n" in detached.replace(b"\r\n", b"")
    ):
        # openssl cms -sign without -binary signs the CRLF-canonical form of a text file that
        # is saved (and given back to us) with LF line ends.
        canonical = detached.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        retry = verify_signed_data(der, detached_content=canonical, extra_certificates=extra)
        if retry.valid:
            return retry
    return report


def _describe(layer: Layer) -> str:
    """One line per layer; a signature is "intact" (cryptographically), never "valid": who
    signed is the trust verdict's business."""
    if layer.signed is None:
        return layer.describe()
    parts = []
    for s in layer.signed.signers:
        who = certificate_label(s.certificate) if s.certificate else "unknown signer"
        state = "signature intact" if s.valid else f"signature BROKEN ({s.error})"
        parts.append(f"{who}: {s.scheme.value}/{s.digest.label} {state}")
    mode = "detached" if layer.signed.detached else "opaque"
    return f"signed ({mode}): " + "; ".join(parts or ["no signer"])


def _trust_verdict(
    reports: Sequence[SignedReport], o: dict[str, Any], extra: list[x509.Certificate]
) -> tuple[list[str], str]:
    """Check who signed (intact signatures only): path lines and the final verdict line.

    Raise a :class:`TrustError` when the signer is not trusted, or when nothing to check the
    identity against was given (unless ``--noverify``): an intact signature by a self-made
    certificate proves nothing about who wrote the message.
    """
    if o["noverify"]:
        return [], f"Verification successful: {NOT_CHECKED} (--noverify)"
    paths: list[str] = []
    if o["trust"] or (o["cafile"] and o["crl"]):
        anchors = [*o["trust"], *([o["cafile"]] if o["cafile"] else [])]
        for report in reports:
            paths += _validate_paths(report, anchors, o["crl"], extra)
        return paths, "Verification successful: signer trusted (path and revocation checked)"
    if o["cafile"]:
        anchors_certs = load_certificates(read_file(o["cafile"], "CA file"), o["cafile"])
        for report in reports:
            paths += _check_chains(report, anchors_certs, extra)
        return paths, (
            "Verification successful: signer chains to the CA file; "
            "revocation not checked (give --crl, or --trust and --crl)"
        )
    raise TrustError(f"{NOT_CHECKED} (give --CAfile or --trust; --noverify accepts it unchecked)")


def _validate_paths(
    report: SignedReport,
    trust_files: Sequence[str],
    crl_files: Sequence[str],
    extra: list[x509.Certificate],
) -> list[str]:
    """Full path validation (revocation required) of every signer, at its signing time."""
    from caducee.pki import ChainedCrlSource, CrlCache, HttpCrlFetcher, TrustStore
    from caducee.pki.validate import validate_certificate

    for path in (*trust_files, *crl_files):
        read_file(path, "trust/CRL file")  # a clear error for a missing file
    trust = TrustStore.from_files(*trust_files)
    crls = ChainedCrlSource(CrlCache.from_files(*crl_files), HttpCrlFetcher())
    lines = []
    for signer in report.signers:
        assert signer.certificate is not None
        result = validate_certificate(
            signer.certificate,
            purpose="signature",
            trust=trust,
            crls=crls,
            at=signer.signing_time or smime.now(),
            at_signing_time=signer.signing_time is not None,
            intermediates=[*report.certificates, *extra],
        )
        lines.append("  path: " + result.describe())
    return lines


def _check_chains(
    report: SignedReport, anchors: list[x509.Certificate], extra: list[x509.Certificate]
) -> list[str]:
    pool = [*report.certificates, *extra]
    lines = []
    for signer in report.signers:
        assert signer.certificate is not None
        at = signer.signing_time or smime.now()
        path = _chain(signer.certificate, anchors, pool, at)
        lines.append("  path: " + " <- ".join(certificate_label(c) for c in path))
    return lines


def _chain(
    cert: x509.Certificate,
    anchors: list[x509.Certificate],
    pool: list[x509.Certificate],
    at: dt.datetime,
) -> list[x509.Certificate]:
    """Issuer-signature chain to an anchor, each certificate valid at ``at``.

    A deliberately simple check for ``--CAfile``; full path validation with revocation is
    ``caducee.pki.validate`` (``--trust``/``--crl``).
    """
    path = [cert]
    for _ in range(8):
        current = path[-1]
        if not current.not_valid_before_utc <= at <= current.not_valid_after_utc:
            raise TrustError(f"certificate of {certificate_label(current)} not valid at {at}")
        for anchor in anchors:
            if _issued_by(current, anchor):
                return [*path, anchor] if anchor != current else path
        issuer = next((c for c in pool if c not in path and _issued_by(current, c)), None)
        if issuer is None:
            break
        path.append(issuer)
    raise TrustError(
        f"signer certificate of {certificate_label(cert)} does not chain to the CA file"
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- encrypt ------------------------------------------------------------------------------------


@group.command()
@click.argument("certs", nargs=-1, metavar="[CERTS]...")
@click.option("--in", "in_", default="-", show_default=True, metavar="FILE", help=IN_HELP)
@click.option(
    "--out", default="-", show_default=True, metavar="FILE",
    help="Where to write the encrypted message ('-': standard output).",
)  # fmt: skip
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.option(
    "--recip", multiple=True, metavar="FILE",
    help="Recipient certificate (repeatable; same as the CERTS arguments).",
)  # fmt: skip
@click.option("--cipher", type=CIPHERS, help="Default: the strongest all recipients support.")
@click.option(
    "--keyopt", multiple=True, help="rsa_padding_mode:oaep|pkcs1, rsa_oaep_md:sha256|sha1"
)
@click.option("--keyid", is_flag=True, help="Identify recipients by subject key identifier.")
@click.option(
    "--legacy", is_flag=True, help="Recipients are legacy (gpgsm): AES-CBC + PKCS#1 v1.5."
)
@click.option("--outform", type=FORMATS, default="smime", show_default=True)
@BINARY_OPTION
@TEXT_OPTION
@click.option("--entity", is_flag=True, help="Encrypt the input as a bare MIME entity.")
@click.option(
    "--no-header-protection", is_flag=True,
    help="Leave the real Subject outside (no RFC 9788 header protection).",
)  # fmt: skip
def encrypt(certs: tuple[str, ...], **o: Any) -> None:
    """Encrypt for every recipient: AuthEnvelopedData (GCM) or EnvelopedData (CBC).

    CERTS are recipient certificate files (PEM/DER), like --recip. The input must be a MIME
    message or entity (with headers); give --text for plain text.
    """
    _check_out(o["out"], o["in_"], o["force"])
    _check_binary(o["binary"], o["outform"])
    paths = [*o["recip"], *certs]
    if not paths:
        raise UsageError("give at least one recipient certificate (--recip CERT)")
    recipient_certs = [load_certificate(read_file(p, "certificate"), p) for p in paths]
    for path, cert in zip(paths, recipient_certs, strict=True):
        _check_certificate(cert, path, "encryption")
    known = CorrespondentStore()
    caps = [LEGACY_GPGSM if o["legacy"] else _learned(known, c) for c in recipient_certs]
    preferred = ContentCipher.from_name(o["cipher"]) if o["cipher"] else None
    choice = choose_encryption(list(zip(recipient_certs, caps, strict=True)), preferred=preferred)
    transport = _transport(_keyopts(o["keyopt"]))
    recipients = [
        Recipient(r.certificate, transport or r.key_transport, use_ski=o["keyid"])
        for r in choice.recipients
    ]
    data = _read(o["in_"])
    if o["text"] or o["outform"] == "smime":
        data = _mime_input(data, o["in_"], o["text"])
    if o["outform"] != "smime":
        content = data if o["binary"] else to_crlf(data)
        der = encrypt_data(content, recipients, random=os.urandom, cipher=choice.cipher)
        _write(o["out"], _der_out(der, o["outform"]))
        return
    if _is_message(data) and not o["entity"]:
        options = ProtectOptions(
            cipher=choice.cipher, header_protection=not o["no_header_protection"]
        )
        out = smime.protect(data, recipients=recipients, options=options)
    else:
        out = encrypt_mime(data, recipients, random=os.urandom, cipher=choice.cipher)
    _write(o["out"], out)


def _learned(store: CorrespondentStore, cert: x509.Certificate) -> Capabilities | None:
    """Capabilities this recipient announced in an earlier signed message, if we kept them."""
    for email in certificate_emails(cert):
        found = store.get(email)
        if found is not None:
            return found
    return None


def _remember(opened: OpenedMessage) -> None:
    for email in CorrespondentStore().learn(opened):
        _say(f"remembered what {email} can decrypt")


def _transport(opts: dict[str, str]) -> KeyTransport | None:
    mode = opts.pop("rsa_padding_mode", None)
    md = opts.pop("rsa_oaep_md", None)
    if opts:
        raise UsageError(f"--keyopt {', '.join(opts)}: not supported when encrypting")
    if mode in (None, "oaep") and md is None:
        return KeyTransport.RSA_OAEP_SHA256 if mode == "oaep" else None
    if mode == "pkcs1":
        return KeyTransport.RSA_PKCS1V15
    if mode in (None, "oaep") and md in ("sha1", "sha256"):
        return KeyTransport.RSA_OAEP_SHA1 if md == "sha1" else KeyTransport.RSA_OAEP_SHA256
    raise UsageError("--keyopt: rsa_padding_mode is oaep or pkcs1, rsa_oaep_md is sha256 or sha1")


# -- decrypt ------------------------------------------------------------------------------------


@group.command()
@click.option("--in", "in_", default="-", show_default=True, metavar="FILE", help=IN_HELP)
@click.option(
    "--out", default="-", show_default=True, metavar="FILE",
    help="Where to write the decrypted message ('-': standard output).",
)  # fmt: skip
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.option(
    "--recip", "recip_cert", metavar="FILE",
    help="Our encryption certificate (with a PEM/DER key).",
)  # fmt: skip
@click.option("--inkey", required=True, metavar="KEY", help=INKEY_HELP)
@click.option("--passin", help=PASSIN_HELP)
@click.option("--inform", type=FORMATS, default="smime", show_default=True)
@click.option("--one-layer", is_flag=True, help="Remove the encryption layer only (as openssl).")
@click.option(
    "--certfile", multiple=True, metavar="FILE", help="Extra certificates for inner signatures."
)
@_trust_options
@click.option("--remember", is_flag=True, help="Remember what valid signers can decrypt.")
@click.option("--keystore", metavar="FILE", help="Keystore the card opens (keystore mode).")
def decrypt(**o: Any) -> None:
    """Decrypt, then unwrap and verify every inner layer, reporting each.

    A signed message inside is checked as by "caducee smime verify": without --CAfile or --trust the
    content is written but the command fails (exit 4) unless --noverify is given.
    """
    _check_out(o["out"], o["in_"], o["force"])
    keys = load_decryptors(o["inkey"], o["recip_cert"], o["passin"], o["keystore"])
    if not keys:
        raise UsageError(
            "this card holds no message decryption key (keystore mode? give --keystore FILE)"
        )
    data = _read(o["in_"])
    inform = _inform(data, o["inform"])
    if inform != "smime":
        report = decrypt_data(_der_in(data, inform), keys)
        _say(f"encrypted: {report.cipher.label}")
        _write(o["out"], report.content)
        return
    extra = _extra_certs(o["certfile"])
    opened = open_message(
        data, keys=keys, extra_certificates=extra, stop_after=1 if o["one_layer"] else None
    )
    for layer in opened.layers:
        _say(_describe(layer))
    if not opened.encrypted:
        raise UsageError("the message is not encrypted")
    if opened.signed and not opened.signature_valid:
        _write(o["out"], opened.entity)
        raise SignatureError("decrypted, but a signature inside does not verify")
    reports = [layer.signed for layer in opened.layers if layer.signed is not None]
    if not reports:
        _write(o["out"], opened.entity)
        return
    try:
        lines, verdict = _trust_verdict(reports, o, extra)
    except CaduceeError:
        _write(o["out"], opened.entity)  # decrypted all the same; the exit status says why not
        raise
    for line in lines:
        _say(line)
    if o["remember"]:
        _remember(opened)
    _write(o["out"], opened.entity)
    _say(verdict)
