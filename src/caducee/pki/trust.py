"""The trust anchors of one installation, loaded once and reused for every message.

A trust bundle (PEM with one or many certificates, DER, or PKCS#7 ``.p7b``/``.p7c``) usually holds
an operator's root and its CA certificates. When a bundle is loaded, self-issued certificates whose
self-signature verifies become *anchors*; the others are kept as *intermediates*: they help build a
path but are trusted only through an anchor. :meth:`TrustStore.add_anchor` (``[trust] anchors``
in the configuration, ``--anchor`` of ``caducee ca check``) trusts a certificate explicitly,
self-signed or not (e.g. one operator's CA without the whole national root).
"""

from __future__ import annotations

import collections
import os
import pathlib
import warnings
from collections.abc import Iterable

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator.path import ValidationPath

from caducee.certfiles import load_certificates
from caducee.errors import UsageError


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, Exception):  # InvalidSignature or unsupported key type
        return False
    return True


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read trust bundle ({exc.strerror})") from None


class TrustStore:
    """Anchors and helper intermediates, with their asn1crypto forms cached for path validation."""

    def __init__(
        self,
        anchors: Iterable[x509.Certificate] = (),
        intermediates: Iterable[x509.Certificate] = (),
    ) -> None:
        self._anchors: dict[bytes, x509.Certificate] = {}
        self._intermediates: dict[bytes, x509.Certificate] = {}
        self._asn1: dict[bytes, asn1_x509.Certificate] = {}
        self._self_signed: dict[bytes, bool] = {}
        #: Keys of paths that passed pyhanko's full check with a given set of CRLs (see validate).
        self.passed_paths: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        #: Candidate paths already built, by leaf and extra intermediates (see validate);
        #: emptied whenever an anchor or intermediate is added.
        self.built_paths: collections.OrderedDict[bytes, list[ValidationPath]] = (
            collections.OrderedDict()
        )
        for cert in anchors:
            self.add_anchor(cert)
        for cert in intermediates:
            self.add_intermediate(cert)

    def __repr__(self) -> str:
        return (
            f"<TrustStore {len(self._anchors)} anchors, {len(self._intermediates)} intermediates>"
        )

    # -- building ----------------------------------------------------------------------------------

    def add_anchor(self, cert: x509.Certificate) -> None:
        der = _der(cert)
        self._anchors[der] = cert
        self._intermediates.pop(der, None)
        self.built_paths.clear()

    def add_intermediate(self, cert: x509.Certificate) -> None:
        der = _der(cert)
        if der not in self._anchors:
            self._intermediates[der] = cert
            self.built_paths.clear()

    def add_bundle(self, data: bytes, source: str = "trust bundle") -> None:
        """Add every certificate of a PEM/DER/PKCS#7 bundle (self-signed ones become anchors)."""
        with warnings.catch_warnings():
            # `openssl crl2pkcs7` writes certificates in an unsorted SET (BER, not DER);
            # cryptography still reads them but warns. Those bundles are common: accept them.
            warnings.filterwarnings("ignore", "PKCS#7 certificates could not be parsed as DER")
            certs = load_certificates(data, source)
        for cert in certs:
            if is_self_signed(cert):
                self.add_anchor(cert)
            else:
                self.add_intermediate(cert)

    @classmethod
    def from_files(
        cls,
        *paths: str | os.PathLike[str],
        anchors: Iterable[str | os.PathLike[str]] = (),
        hint: str = "list it under [trust] anchors in the configuration",
    ) -> TrustStore:
        """Bundles (self-signed certificates become anchors) plus ``anchors``: files whose
        every certificate is trusted as is, self-signed or not (an operator CA without its
        root). ``hint`` tells the user how to trust a CA that is not a root, should no anchor
        be found."""
        store = cls()
        for path in anchors:
            for cert in load_certificates(_read(path), str(path)):
                store.add_anchor(cert)
        for path in paths:
            store.add_bundle(_read(path), str(path))
        if not store._anchors:
            raise UsageError(
                f"{', '.join(map(str, paths)) or 'trust bundles'}: no self-signed root found; "
                f"to trust a CA certificate that is not a root, {hint}"
            )
        return store

    # -- reading -----------------------------------------------------------------------------------

    @property
    def anchors(self) -> list[x509.Certificate]:
        return list(self._anchors.values())

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return list(self._intermediates.values())

    def is_anchor(self, cert: x509.Certificate) -> bool:
        return _der(cert) in self._anchors

    def is_root(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` is self-signed (memoised: asked once per validated path)."""
        der = _der(cert)
        found = self._self_signed.get(der)
        if found is None:
            found = self._self_signed[der] = is_self_signed(cert)
        return found

    def asn1(self, cert: x509.Certificate) -> asn1_x509.Certificate:
        """The asn1crypto form, parsed once per certificate."""
        der = _der(cert)
        found = self._asn1.get(der)
        if found is None:
            found = self._asn1[der] = asn1_x509.Certificate.load(der)
        return found

    def remember_passed(self, key: bytes, limit: int = 4096) -> None:
        self.passed_paths[key] = None
        self.passed_paths.move_to_end(key)
        while len(self.passed_paths) > limit:
            self.passed_paths.popitem(last=False)

    def asn1_anchors(self) -> list[asn1_x509.Certificate]:
        return [self.asn1(c) for c in self._anchors.values()]

    def asn1_intermediates(self) -> list[asn1_x509.Certificate]:
        return [self.asn1(c) for c in self._intermediates.values()]
