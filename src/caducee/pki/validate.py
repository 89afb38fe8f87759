"""Path validation of a professional's certificate, for one purpose, at one moment.

Built on pyhanko-certvalidator's RFC 5280 path validation, with caducee's policy on top:

- revocation is **required** for every certificate below the anchor, by CRL
  (``RevocationCheckingRule.CRL_REQUIRED`` for end-entity and CA certificates — never the legacy
  "hard-fail" mode, which silently skips certificates that declare no distribution point);
- a certificate with no CRL distribution point is refused outright
  (:class:`NoDistributionPointError`), even if some CRL of its issuer happens to be at hand;
- CRLs are found by us (local cache, then the distribution point over HTTP with a timeout), and a
  CRL whose signature does not verify against the issuer in the path is rejected;
- key usage per purpose (signature: digitalSignature; encryption: keyEncipherment for RSA,
  keyAgreement for EC) and, when present, the EKU must allow emailProtection;
- the e-mail address, when given, must be one of the certificate's rfc822Name SANs;
- ``at`` is the moment checked: the signing time for a received message (``at_signing_time=True``:
  CRLs issued later are used retroactively, and a keyCompromise revocation invalidates the
  certificate whatever the claimed signing time), or now for a recipient.

pyhanko-certvalidator is async only; :func:`validate_certificate` wraps
:func:`async_validate_certificate` with ``asyncio.run`` for synchronous callers.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import datetime as dt
import hashlib
import itertools
import threading
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator import errors as pv_errors
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.validate import async_validate_path

from caducee.errors import UsageError
from caducee.pki.crl import CrlCache, CrlSource, ParsedCrl, distribution_points
from caducee.pki.crl_rules import check_crl_applies, check_crl_signer
from caducee.pki.errors import (
    CertificateRevokedError,
    CrlSignatureError,
    EmailMismatchError,
    ExpiredError,
    InvalidCertificateError,
    NoDistributionPointError,
    RevocationUnavailableError,
    UnknownCAError,
    WrongUsageError,
)
from caducee.pki.profiles import (
    Purpose,
    certificate_emails,
    email_matches,
    required_key_usage,
)
from caducee.pki.trust import TrustStore
from caducee.serials import format_serial

_REQUIRED = CertRevTrustPolicy(
    RevocationCheckingPolicy(
        ee_certificate_rule=RevocationCheckingRule.CRL_REQUIRED,
        intermediate_ca_cert_rule=RevocationCheckingRule.CRL_REQUIRED,
    )
)
_REQUIRED_RETRO = dataclasses.replace(_REQUIRED, retroactive_revinfo=True)
_PATH_ONLY = CertRevTrustPolicy(
    RevocationCheckingPolicy(
        ee_certificate_rule=RevocationCheckingRule.NO_CHECK,
        intermediate_ca_cert_rule=RevocationCheckingRule.NO_CHECK,
    )
)
_COMPROMISE = (x509.ReasonFlags.key_compromise, x509.ReasonFlags.ca_compromise)


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """A validated certificate and the path that makes it trusted (leaf first, anchor last)."""

    certificate: x509.Certificate
    path: tuple[x509.Certificate, ...]
    purpose: Purpose
    at: dt.datetime
    email: str | None
    crl_sources: tuple[str, ...]

    @property
    def trust_anchor(self) -> x509.Certificate:
        return self.path[-1]

    def describe(self) -> str:
        """The path on one line, e.g. ``CN=Dr A <- CN=Operator A CA <- CN=Root (anchor)``."""
        names = [_subject(c) for c in self.path]
        return " <- ".join([*names[:-1], names[-1] + " (trust anchor)"])


def _subject(cert: x509.Certificate) -> str:
    """A short human name: the CN (with the professional identifier when there is one)."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ids = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if cns:
        name = str(cns[0].value)
        return f"{name} ({ids[0].value!s})" if ids else name
    return cert.subject.rfc4514_string() or f"serial {format_serial(cert.serial_number)}"


def _reason_name(entry: x509.RevokedCertificate) -> str:
    try:
        flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return "unspecified"
    return str(flag.value)


def check_email(cert: x509.Certificate, email: str) -> None:
    found = certificate_emails(cert)
    if not any(email_matches(f, email) for f in found):
        raise EmailMismatchError(_subject(cert), email, found)


def check_usage(cert: x509.Certificate, purpose: Purpose) -> None:
    """Key usage for ``purpose``; an absent KeyUsage allows all (RFC 5280), an EKU must fit."""
    key = cert.public_key()
    missing: list[str] = []
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    except ValueError as exc:
        raise InvalidCertificateError(
            f"certificate of {_subject(cert)}: bad KeyUsage ({exc})"
        ) from None
    if ku is not None:
        missing += [bit for bit in required_key_usage(purpose, key) if not getattr(ku, bit)]  # type: ignore[arg-type]
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
        if not allowed & set(eku):
            missing.append("emailProtection EKU")
    except x509.ExtensionNotFound:
        pass
    if missing:
        raise WrongUsageError(_subject(cert), purpose.value, missing)


def _check_times(path: Sequence[x509.Certificate], at: dt.datetime) -> None:
    """``path`` from the anchor down, the anchor included (as OpenSSL and the mail clients
    check it: an expired root is no longer vouched for by its operator); the end entity is
    judged first, so an expiry names it rather than a CA that expires at the same moment."""
    for cert in reversed(path):
        anchor = " (trust anchor)" if cert is path[0] else ""
        if at < cert.not_valid_before_utc:
            raise ExpiredError(_subject(cert) + anchor, not_before=cert.not_valid_before_utc, at=at)
        if at > cert.not_valid_after_utc:
            raise ExpiredError(_subject(cert) + anchor, not_after=cert.not_valid_after_utc, at=at)


def _crls_for(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    source: CrlSource,
    at: dt.datetime,
    retroactive: bool,
) -> list[ParsedCrl]:
    """The one CRL that decides for ``cert``: the newest validly signed one usable at ``at``.

    A cache may hold several generations of an issuer's CRL; an older one can still list a
    certificate hold since released, or miss a recent revocation, so only the newest counts
    (not issued after ``at`` unless CRLs are used retroactively for a signing time).
    """
    urls = distribution_points(cert)
    if not urls:
        raise NoDistributionPointError(_subject(cert))
    lookup = source.lookup(cert, urls)
    candidates = [p for p in lookup.crls if p.crl.issuer == issuer.subject]
    good = [p for p in candidates if p.signed_by(issuer)]
    if candidates and not good:
        raise CrlSignatureError(
            f"CRL for {_subject(cert)} from {candidates[0].source} fails its signature check "
            f"against {_subject(issuer)}; rejected",
            subject=_subject(cert),
            url=candidates[0].source,
        )
    if not good:
        raise RevocationUnavailableError(
            f"no CRL found for {_subject(cert)} (looked at {', '.join(lookup.looked_at)})",
            subject=_subject(cert),
        )
    usable = [p for p in good if retroactive or p.crl.last_update_utc <= at] or good
    return [max(usable, key=lambda p: p.crl.last_update_utc)]


def _to_crypto(cert: asn1_x509.Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.dump())


async def async_validate_certificate(
    cert: x509.Certificate,
    *,
    purpose: Purpose | str,
    trust: TrustStore,
    crls: CrlSource | Iterable[x509.CertificateRevocationList],
    at: dt.datetime,
    email: str | None = None,
    intermediates: Iterable[x509.Certificate] = (),
    at_signing_time: bool = False,
) -> ValidationResult:
    """Validate ``cert`` for ``purpose`` at ``at``; raise a :class:`TrustError` subclass if not.

    ``crls`` is a :class:`CrlSource` (reuse one across calls: CRLs are parsed and checked once)
    or plain CRLs. ``intermediates`` are extra CA certificates (e.g. carried in the message).
    """
    purpose = Purpose.parse(purpose)
    if at.tzinfo is None:
        raise UsageError("validation time must be timezone-aware")
    source: CrlSource = crls if isinstance(crls, CrlSource) else CrlCache(crls)
    if email is not None:
        check_email(cert, email)
    check_usage(cert, purpose)

    leaf_der = cert.public_bytes(Encoding.DER)
    extra = [c.public_bytes(Encoding.DER) for c in intermediates]
    other = trust.asn1_intermediates() + [asn1_x509.Certificate.load(der) for der in extra]
    paths = await _candidate_paths(trust, leaf_der, extra, other, at, cert)
    first_error: Exception | None = None
    for path in paths:
        chain = [_to_crypto(c) for c in path.iter_certs(include_root=True)]  # anchor first
        try:
            return await _validate_path(
                cert, chain, path, trust, other, source, purpose, at, email, at_signing_time
            )
        except (CertificateRevokedError, ExpiredError, RevocationUnavailableError,
                InvalidCertificateError) as exc:  # fmt: skip
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


async def _candidate_paths(
    trust: TrustStore,
    leaf_der: bytes,
    extra: list[bytes],
    other: list[asn1_x509.Certificate],
    at: dt.datetime,
    cert: x509.Certificate,
) -> list[ValidationPath]:
    """The paths from ``cert`` to an anchor, built once per leaf (and extra intermediates)
    for as long as the trust store does not change: building costs more than validating a
    path whose verdict is cached, and the same few signers write again and again."""
    key = hashlib.sha256(b"".join([leaf_der, *extra])).digest()
    cached = trust.built_paths.get(key)
    if cached is not None:
        trust.built_paths.move_to_end(key)
        return cached
    builder_ctx = ValidationContext(
        trust_roots=trust.asn1_anchors(), other_certs=other, moment=at, revinfo_policy=_PATH_ONLY
    )
    leaf = asn1_x509.Certificate.load(leaf_der)
    try:
        paths: list[ValidationPath] = await builder_ctx.path_builder.async_build_paths(leaf)
    except pv_errors.PathBuildingError:
        raise UnknownCAError(_subject(cert), cert.issuer.rfc4514_string()) from None
    except (ValueError, TypeError, KeyError) as exc:  # asn1crypto meeting a malformed field
        raise InvalidCertificateError(
            f"certificate of {_subject(cert)} (or a CA certificate) cannot be processed: "
            f"{type(exc).__name__}"
        ) from None
    if not paths:  # pragma: no cover - pyhanko raises instead
        raise UnknownCAError(_subject(cert), cert.issuer.rfc4514_string())
    trust.built_paths[key] = paths
    while len(trust.built_paths) > _BUILT_PATHS_KEPT:
        trust.built_paths.popitem(last=False)
    return paths


async def _validate_path(
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    path: ValidationPath,
    trust: TrustStore,
    other: list[asn1_x509.Certificate],
    source: CrlSource,
    purpose: Purpose,
    at: dt.datetime,
    email: str | None,
    at_signing_time: bool,
) -> ValidationResult:
    _check_times(chain, at)
    # A path ending at a CA certificate trusted directly (not self-signed, e.g. an operator CA
    # without its root): pyhanko cannot place that CA as a CRL issuer, so revocation is
    # checked here in full (crl_rules) and pyhanko checks the path only.
    rooted = trust.is_root(chain[0])
    used: list[ParsedCrl] = []
    per_cert: list[tuple[x509.Certificate, list[ParsedCrl]]] = []
    for issuer, subject in itertools.pairwise(chain):
        found = _crls_for(subject, issuer, source, at, at_signing_time)
        if not rooted:
            check_crl_signer(issuer, _subject(subject), _subject(issuer))
            for parsed in found:
                check_crl_applies(parsed, subject, _subject(subject), at, at_signing_time)
        per_cert.append((subject, found))
        used += found
    # Revocation entries first, so the error names the right certificate with its reason.
    for subject, found in per_cert:
        for parsed in found:
            entry = parsed.entry(subject.serial_number)
            if entry is None:
                continue
            when = entry.revocation_date_utc
            reason = _reason_name(entry)
            compromised = reason in {r.value for r in _COMPROMISE}
            if when <= at or (at_signing_time and compromised):
                raise CertificateRevokedError(
                    _subject(subject), when, reason, is_ee=subject == cert
                )
    key = _verdict_key(chain, used, at_signing_time)
    if key is not None and key in trust.passed_paths and _fresh(used, at, at_signing_time):
        trust.passed_paths.move_to_end(key)
        return _result(cert, chain, purpose, at, email, used)
    ctx = ValidationContext(
        trust_roots=trust.asn1_anchors(),
        other_certs=other,
        crls=[p.asn1 for p in used],
        moment=at,
        revinfo_policy=(_REQUIRED_RETRO if at_signing_time else _REQUIRED)
        if rooted
        else _PATH_ONLY,
    )
    try:
        await async_validate_path(ctx, path)
    except pv_errors.RevokedError as exc:
        raise CertificateRevokedError(
            _subject(cert), exc.revocation_dt, str(exc.reason.native), is_ee=exc.is_ee_cert
        ) from None
    except pv_errors.StaleRevinfoError:
        raise RevocationUnavailableError(
            f"the CRLs for {_subject(cert)}'s path are not current at "
            f"{at:%Y-%m-%d %H:%M} UTC (fetch a newer CRL)",
            subject=_subject(cert),
        ) from None
    except pv_errors.InsufficientRevinfoError as exc:
        raise RevocationUnavailableError(
            f"revocation status of {_subject(cert)} could not be established: "
            f"{_short(exc.failure_msg)}",
            subject=_subject(cert),
        ) from None
    except pv_errors.ExpiredError as exc:  # pragma: no cover - _check_times catches it first
        raise ExpiredError(_subject(cert), not_after=exc.expired_dt, at=at) from None
    except pv_errors.ValidationError as exc:
        raise InvalidCertificateError(
            f"certificate of {_subject(cert)} refused: {_short(exc.failure_msg)}"
        ) from None
    except (ValueError, TypeError, KeyError) as exc:  # asn1crypto meeting a malformed field
        raise InvalidCertificateError(
            f"certificate path of {_subject(cert)} cannot be processed: {type(exc).__name__}"
        ) from None
    if key is not None:
        trust.remember_passed(key)
    return _result(cert, chain, purpose, at, email, used)


def _result(
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    purpose: Purpose,
    at: dt.datetime,
    email: str | None,
    used: list[ParsedCrl],
) -> ValidationResult:
    return ValidationResult(
        certificate=cert,
        path=tuple(reversed(chain)),
        purpose=purpose,
        at=at,
        email=email,
        crl_sources=tuple(dict.fromkeys(p.source for p in used)),
    )


def _verdict_key(
    chain: list[x509.Certificate], used: list[ParsedCrl], retroactive: bool
) -> bytes | None:
    """Identify (path, CRLs, mode) so a repeat validation can skip pyhanko's O(CRL size) scan.

    What pyhanko decides from these inputs does not depend on ``at`` except through validity
    periods (checked by ``_check_times``), revocation dates (checked by us from the same CRLs)
    and CRL freshness (re-checked by ``_fresh``). CRLs without nextUpdate are never cached.
    """
    if any(p.crl.next_update_utc is None for p in used):
        return None
    h = hashlib.sha256(b"retro" if retroactive else b"now")
    for cert in chain:
        h.update(cert.fingerprint(hashes.SHA256()))
    for parsed in sorted(used, key=lambda p: p.der):
        h.update(hashlib.sha256(parsed.der).digest())
    return h.digest()


def _fresh(used: list[ParsedCrl], at: dt.datetime, retroactive: bool) -> bool:
    for parsed in used:
        nxt = parsed.crl.next_update_utc
        if nxt is None or at > nxt:
            return False
        if not retroactive and at < parsed.crl.last_update_utc:
            return False
    return True


def _short(message: str) -> str:
    return " ".join(message.split())[:300]


def validate_certificate(
    cert: x509.Certificate,
    *,
    purpose: Purpose | str,
    trust: TrustStore,
    crls: CrlSource | Iterable[x509.CertificateRevocationList],
    at: dt.datetime,
    email: str | None = None,
    intermediates: Iterable[x509.Certificate] = (),
    at_signing_time: bool = False,
) -> ValidationResult:
    """Synchronous :func:`async_validate_certificate` (do not call from a running event loop).

    The main thread reuses one event loop: starting and closing one per call (``asyncio.run``)
    cost more than the validation itself."""
    return _run(
        async_validate_certificate(
            cert,
            purpose=purpose,
            trust=trust,
            crls=crls,
            at=at,
            email=email,
            intermediates=intermediates,
            at_signing_time=at_signing_time,
        )
    )


_BUILT_PATHS_KEPT = 1024
_main_loop: asyncio.AbstractEventLoop | None = None


def _run(coro: Coroutine[Any, Any, ValidationResult]) -> ValidationResult:
    """Run ``coro`` to completion: on the main thread's own long-lived loop (closed at exit),
    elsewhere on a fresh one."""
    global _main_loop
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coro)
    if _main_loop is None or _main_loop.is_closed():
        _main_loop = asyncio.new_event_loop()
        atexit.register(_main_loop.close)
    return _main_loop.run_until_complete(coro)
