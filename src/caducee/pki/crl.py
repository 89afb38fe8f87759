"""Where CRLs come from: a local cache of files, or the certificate's distribution point over HTTP.

Each CRL is parsed once (cryptography and asn1crypto forms) and its signature checked once per
issuer key, so validating one message per call stays cheap. HTTP fetching always has a timeout
and a size limit: an unreachable or slow distribution point gives
:class:`RevocationUnavailableError` within the timeout, never a hang.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import pathlib
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caducee.errors import UsageError
from caducee.pki.errors import RevocationUnavailableError

MAX_CRL_BYTES = 20 * 1024 * 1024


def parse_crl(data: bytes, source: str = "CRL") -> x509.CertificateRevocationList:
    """A PEM or DER CRL; raises :class:`UsageError` naming ``source`` when unreadable."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise UsageError(f"{source}: not a PEM or DER CRL") from None


#: Lookups answered by a scan before a CRL is indexed by serial number (the index costs about
#: 18 scans to build, whatever the size).
_LOOKUPS_BEFORE_INDEX = 16


class ParsedCrl:
    """A CRL, its asn1crypto form, and a memo of the issuer keys its signature was checked with."""

    __slots__ = ("_index", "_lookups", "_verified", "asn1", "crl", "der", "source")

    def __init__(self, crl: x509.CertificateRevocationList, source: str) -> None:
        self.crl = crl
        self.source = source
        self.der = crl.public_bytes(serialization.Encoding.DER)
        self.asn1 = asn1_crl.CertificateList.load(self.der)
        self._verified: dict[bytes, bool] = {}
        self._index: dict[int, x509.RevokedCertificate] | None = None
        self._lookups = 0

    def __repr__(self) -> str:
        return f"<ParsedCrl {self.crl.issuer.rfc4514_string()} from {self.source}>"

    def signed_by(self, issuer: x509.Certificate) -> bool:
        """True if ``issuer`` names and signed this CRL (memoised per issuer key)."""
        if self.crl.issuer != issuer.subject:
            return False
        spki = issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key = hashlib.sha256(spki).digest()
        ok = self._verified.get(key)
        if ok is None:
            try:
                ok = self.crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError):
                ok = False
            self._verified[key] = ok
        return ok

    def entry(self, serial: int) -> x509.RevokedCertificate | None:
        """The CRL entry for ``serial``, if revoked. pyca searches the whole list each time
        (10 ms for 100,000 entries); a CRL asked often is indexed once instead."""
        if self._index is None:
            self._lookups += 1
            if self._lookups <= _LOOKUPS_BEFORE_INDEX:
                return self.crl.get_revoked_certificate_by_serial_number(serial)
            self._index = {entry.serial_number: entry for entry in self.crl}
        return self._index.get(serial)


@dataclasses.dataclass(frozen=True)
class CrlLookup:
    """What a source found for one certificate: CRLs, and where it looked."""

    crls: list[ParsedCrl]
    looked_at: list[str]


@runtime_checkable
class CrlSource(Protocol):
    """Gives the CRLs that may cover a certificate, from its distribution-point URLs."""

    def lookup(self, cert: x509.Certificate, urls: Sequence[str]) -> CrlLookup: ...


class CrlCache:
    """CRLs already at hand (files, a previous fetch); matched to a certificate by issuer name."""

    def __init__(self, crls: Iterable[x509.CertificateRevocationList | ParsedCrl] = ()) -> None:
        self._by_issuer: dict[bytes, list[ParsedCrl]] = {}
        for crl in crls:
            self.add(crl)

    def add(self, crl: x509.CertificateRevocationList | ParsedCrl, source: str = "cache") -> None:
        parsed = crl if isinstance(crl, ParsedCrl) else ParsedCrl(crl, source)
        key = parsed.crl.issuer.public_bytes()
        same = self._by_issuer.setdefault(key, [])
        if all(p.der != parsed.der for p in same):
            same.append(parsed)

    @classmethod
    def from_files(cls, *paths: str | pathlib.Path) -> CrlCache:
        cache = cls()
        for path in paths:
            try:
                data = pathlib.Path(path).read_bytes()
            except OSError as exc:
                raise UsageError(f"{path}: cannot read CRL ({exc.strerror})") from None
            cache.add(parse_crl(data, str(path)), str(path))
        return cache

    def lookup(self, cert: x509.Certificate, urls: Sequence[str]) -> CrlLookup:
        return CrlLookup(list(self._by_issuer.get(cert.issuer.public_bytes(), [])), ["local cache"])


class HttpCrlFetcher:
    """Fetches CRLs from http(s) distribution points, keeping each until its nextUpdate."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._cache: dict[str, ParsedCrl] = {}
        self._lock = threading.Lock()

    def fetch(self, url: str) -> ParsedCrl:
        with self._lock:
            cached = self._cache.get(url)
        now = dt.datetime.now(dt.UTC)
        if cached is not None:
            nxt = cached.crl.next_update_utc
            if nxt is not None and nxt > now:
                return cached
        if not url.lower().startswith(("http://", "https://")):
            raise RevocationUnavailableError(
                f"CRL distribution point {url} is not an HTTP URL", url=url
            )
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 - scheme checked
                data = resp.read(MAX_CRL_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise RevocationUnavailableError(
                f"CRL distribution point {url} answered HTTP {exc.code}", url=url
            ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RevocationUnavailableError(
                f"CRL distribution point {url} unreachable ({reason}; timeout {self.timeout:g}s)",
                url=url,
            ) from None
        if len(data) > MAX_CRL_BYTES:
            raise RevocationUnavailableError(f"CRL at {url} is larger than allowed", url=url)
        try:
            crl = parse_crl(data, url)
        except UsageError:
            raise RevocationUnavailableError(f"{url} did not return a CRL", url=url) from None
        parsed = ParsedCrl(crl, url)
        with self._lock:
            self._cache[url] = parsed
        return parsed

    def lookup(self, cert: x509.Certificate, urls: Sequence[str]) -> CrlLookup:
        found: list[ParsedCrl] = []
        errors: list[RevocationUnavailableError] = []
        for url in urls:
            try:
                found.append(self.fetch(url))
            except RevocationUnavailableError as exc:
                errors.append(exc)
        if not found and errors:
            raise errors[0]
        return CrlLookup(found, list(urls))


class ChainedCrlSource:
    """Try sources in order; the first that has a CRL for the certificate's issuer wins."""

    def __init__(self, *sources: CrlSource) -> None:
        self.sources = sources

    def lookup(self, cert: x509.Certificate, urls: Sequence[str]) -> CrlLookup:
        looked: list[str] = []
        last_error: RevocationUnavailableError | None = None
        for source in self.sources:
            try:
                result = source.lookup(cert, urls)
            except RevocationUnavailableError as exc:
                last_error = exc
                continue
            looked += result.looked_at
            if any(p.crl.issuer == cert.issuer for p in result.crls):
                return CrlLookup(result.crls, looked)
        if last_error is not None:
            raise last_error
        return CrlLookup([], looked)


def distribution_points(cert: x509.Certificate) -> list[str]:
    """URIs of the certificate's CRL distribution points (empty if it declares none)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    urls = []
    for dp in ext:
        for name in dp.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier):
                urls.append(name.value)
    return urls
