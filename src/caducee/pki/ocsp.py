"""An OCSP responder (RFC 6960) answering from the CA's index: the CA signs its own responses.

Status comes straight from ``index.sqlite``, so a revocation is visible to OCSP clients at once,
before the next CRL is even fetched. Serials the CA never issued get ``unknown``; requests about
another CA's certificates get ``unauthorized``; unreadable requests ``malformedRequest``. A nonce
in the request is echoed. The CRL stays the revocation source our own validator requires; OCSP
serves outside S/MIME clients that prefer it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from caducee.errors import CaduceeError
from caducee.pki.ca import REASONS, CertificateAuthority
from caducee.pki.signer import sign_ocsp

_HASHLIB = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


class OcspResponder:
    """Answers OCSP requests for one CA (which must be opened with its key)."""

    def __init__(
        self,
        ca: CertificateAuthority,
        *,
        validity: dt.timedelta = dt.timedelta(hours=24),
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.ca = ca
        self.validity = validity
        self._clock = clock
        cert = asn1_x509.Certificate.load(ca.certificate.public_bytes(serialization.Encoding.DER))
        self._name_der = cert.subject.dump()
        self._key_bits = bytes(cert.public_key["public_key"].contents[1:])  # skip unused-bits byte

    def _issuer_matches(self, request: ocsp.OCSPRequest) -> bool:
        name = _HASHLIB.get(request.hash_algorithm.name)
        if name is None:
            return False
        return (
            hashlib.new(name, self._name_der).digest() == request.issuer_name_hash
            and hashlib.new(name, self._key_bits).digest() == request.issuer_key_hash
        )

    def respond(self, request_der: bytes, *, now: dt.datetime | None = None) -> bytes:
        """The DER OCSPResponse for ``request_der``; never raises for bad input."""
        try:
            return self._respond(request_der, now)
        except Exception:  # a responder answers, whatever happens: internalError, not a crash
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)

    def _respond(self, request_der: bytes, now: dt.datetime | None) -> bytes:
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm
        except (ValueError, UnsupportedAlgorithm, NotImplementedError):
            # NotImplementedError: several CertIDs in one request, which cryptography's
            # parser and builder do not handle; clients send one certificate per request.
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if not self._issuer_matches(request):
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        now = (now or self._clock()).astimezone(dt.UTC).replace(microsecond=0)
        records = self.ca.store.records(serial=request.serial_number)
        revocation_time: dt.datetime | None = None
        reason: x509.ReasonFlags | None = None
        if not records:
            status = ocsp.OCSPCertStatus.UNKNOWN
        elif records[0].status == "revoked":
            status = ocsp.OCSPCertStatus.REVOKED
            revocation_time = records[0].revocation_time
            reason = REASONS.get(records[0].reason or "unspecified")
        else:
            status = ocsp.OCSPCertStatus.GOOD
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=algorithm,
            cert_status=status,
            this_update=now,
            next_update=now + self.validity,
            revocation_time=revocation_time,
            revocation_reason=reason,
        )
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce)
            builder = builder.add_extension(nonce.value, critical=False)
        except (x509.ExtensionNotFound, ValueError):
            pass
        try:
            response = sign_ocsp(builder, self.ca.require_signer(), self.ca.certificate)
        except CaduceeError:
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
        return response.public_bytes(serialization.Encoding.DER)


def request_for(
    cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None
) -> bytes:
    """A DER OCSP request for ``cert`` (SHA-256 CertID), for clients and tests."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)
