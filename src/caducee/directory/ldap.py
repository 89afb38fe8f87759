"""An operator's LDAP directory (OpenLDAP), read and written with ldap3.

Entries are ``inetOrgPerson`` objects named ``mail=<e-mail>,<base DN>``:

=================  =========================================================================
entry field         LDAP attribute
=================  =========================================================================
email               mail
common_name         cn
surname             sn
given_name          givenName
profession          title
organisation        o
professional_id     employeeNumber (RPPS-style, 11 digits)
certificates        userCertificate;binary (one DER value each) and userSMIMECertificate
                    (a certs-only PKCS#7 bundle, as Outlook publishes; plain DER also read)
=================  =========================================================================

Every filter value goes through ``escape_filter_chars``; every operation has a connect and a
receive timeout, so a dead server gives :class:`DirectoryUnavailableError`, never a hang.

TLS (``ldaps://``, or ``ldap://`` with ``starttls``) is checked by OpenSSL itself, chain and host
name, during the handshake: ldap3 2.9.1 turns OpenSSL's host-name check off and calls the
deprecated ``ssl.match_hostname`` afterwards, which warns on Python 3.11 and is gone in 3.12. A
failed handshake raises :class:`DirectoryTlsError` saying why (not trusted, wrong host name,
not TLS on that port).
"""

from __future__ import annotations

import contextlib
import math
import os
import ssl
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

with warnings.catch_warnings():
    # ldap3 2.9.1 imports names that pyasn1 >= 0.6 deprecates; nothing for us to fix.
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions as ldap_exc
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn

from caducee.directory.api import (
    Directory,
    DirectoryAccessError,
    DirectoryEntry,
    DirectoryUnavailableError,
    LookupResult,
    Query,
    ReadOnlyDirectoryError,
    _CertPredicate,
    build_entry,
    certificate_emails,
    decode_all,
    der,
    fingerprint,
    fold,
)
from caducee.errors import CaduceeError, DirectoryError

__all__ = [
    "ATTRIBUTES",
    "DirectoryTlsError",
    "LdapDirectory",
    "entry_attributes",
    "ldif_record",
    "smime_bundle",
]

#: entry field -> LDAP attribute
ATTRIBUTES = {
    "email": "mail",
    "common_name": "cn",
    "surname": "sn",
    "given_name": "givenName",
    "profession": "title",
    "organisation": "o",
    "professional_id": "employeeNumber",
}
CERT_ATTR = "userCertificate;binary"
SMIME_ATTR = "userSMIMECertificate"
#: What ldap3's BER decoder raises on bytes that are not an LDAP message (a web server on the
#: configured port, a proxy answering for an address it cannot reach).
_NOT_LDAP = (KeyError, IndexError, ValueError, TypeError)
_NOT_LDAP_WHY = "the server's answer is not LDAP (wrong port, or not a directory server?)"
_UNREACHABLE = (
    ldap_exc.LDAPSocketOpenError,
    ldap_exc.LDAPSocketReceiveError,
    ldap_exc.LDAPSocketSendError,
    ldap_exc.LDAPSessionTerminatedByServerError,
    ldap_exc.LDAPResponseTimeoutError,
    ldap_exc.LDAPSocketCloseError,
)


class DirectoryTlsError(DirectoryUnavailableError):
    """TLS with the directory failed: certificate not trusted or not for this host, or no TLS
    on that port. Trying again will not help until someone fixes the URL, ``ca_file`` or the
    server (``needs_fixing``, as for :class:`caducee.errors.TransportError`)."""

    needs_fixing = True


def _tls_context(ca_file: str | os.PathLike[str] | None, where: str) -> ssl.SSLContext:
    """A client context checking chain and host name: against ``ca_file`` only when given (the
    operator's CA, read as PEM, DER or PKCS#7), else against the system's CAs."""
    if ca_file is None:
        return ssl.create_default_context()
    from caducee.certfiles import load_certificates

    what = f"{where}: CA file (ca_file) {os.fsdecode(ca_file)}"
    try:
        with open(ca_file, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise DirectoryError(f"{what}: cannot read it ({exc.strerror})") from None
    try:
        certs = load_certificates(data, what)
    except CaduceeError as exc:
        raise DirectoryError(str(exc)) from None
    der_certs = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)
    try:
        return ssl.create_default_context(cadata=der_certs)
    except (ssl.SSLError, ValueError):
        raise DirectoryError(f"{what}: OpenSSL cannot use these certificates") from None


def _tls_failure(exc: BaseException, host: str) -> str:
    """Why a TLS handshake with ``host`` failed, in words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = str(exc.verify_message or exc.reason or exc).strip().rstrip(".")
        low = reason.lower()
        if "mismatch" in low:
            return (
                f"TLS: the server certificate is not valid for {host!r} "
                "(use the host name the certificate names, or fix the certificate)"
            )
        if "issuer" in low or "self-signed" in low or "self signed" in low:
            return f"TLS: server certificate not trusted ({reason}; check ca_file)"
        return f"TLS: server certificate refused ({reason})"
    if isinstance(exc, ssl.SSLEOFError | ConnectionError) or (
        isinstance(exc, ssl.SSLError)
        and exc.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE")
    ):
        return (
            "TLS handshake failed: the server does not speak TLS on this port "
            "(plain LDAP? use ldap:// or the server's ldaps:// port)"
        )
    reason = getattr(exc, "reason", None) or str(exc)
    return f"TLS handshake failed ({str(reason)[:160]})"


class _CheckedTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 is untyped
    """ldap3's TLS hook, wrapping sockets with our context and the server's host name, so that
    OpenSSL checks the name during the handshake. ``failure`` keeps why the last one failed:
    ldap3 re-raises handshake errors as its own, their text nested in tuples."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.context = context
        self.failure: str | None = None

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        host = str(connection.server.host)
        try:
            connection.socket = self.context.wrap_socket(
                connection.socket,
                server_side=False,
                do_handshake_on_connect=do_handshake,
                server_hostname=host,
            )
        except (ssl.SSLError, ConnectionError) as exc:
            self.failure = _tls_failure(exc, host)
            raise


def entry_attributes(entry: DirectoryEntry) -> dict[str, list[Any]]:
    """The LDAP attributes of an entry (empty fields left out), for add or LDIF."""
    attrs: dict[str, list[Any]] = {
        "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"]
    }
    for field, attr in ATTRIBUTES.items():
        value = getattr(entry, field)
        if value:
            attrs[attr] = [value]
    attrs[CERT_ATTR] = [der(c) for c in entry.certificates]
    attrs[SMIME_ATTR] = [smime_bundle(entry.certificates)]
    return attrs


def smime_bundle(certs: Sequence[x509.Certificate]) -> bytes:
    """A degenerate (certs-only) PKCS#7 SignedData, the usual userSMIMECertificate value."""
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)


def _smime_values(blobs: Iterable[bytes], where: str, problems: list[str]) -> list[bytes]:
    """Certificates inside userSMIMECertificate values (PKCS#7 bundles, or plain DER)."""
    out: list[bytes] = []
    for i, blob in enumerate(blobs):
        try:
            inside = [der(c) for c in pkcs7.load_der_pkcs7_certificates(blob)]
        except Exception:  # not PKCS#7: some publishers store a bare certificate
            out.append(blob)
            continue
        if not inside:
            problems.append(f"{where}: userSMIMECertificate #{i + 1} holds no certificate")
        out.extend(inside)
    return out


def _certificate_blobs(raw: dict[str, Any], where: str, problems: list[str]) -> list[bytes]:
    """Every certificate value of an entry, identical bytes once (the bundle repeats them)."""
    blobs = [bytes(v) for v in raw.get(CERT_ATTR.lower(), [])]
    blobs += [bytes(v) for v in raw.get("usercertificate", [])]
    blobs += _smime_values((bytes(v) for v in raw.get(SMIME_ATTR.lower(), [])), where, problems)
    return list(dict.fromkeys(blobs))


def _unreachable(exc: Exception, timeout: float) -> str:
    """What happened, in words: ldap3 reports a refused connection and a silent server with
    the same exception class, so its message says which."""
    text = str(exc).lower()
    if "refused" in text:
        return "unreachable: connection refused (is the directory server running at this address?)"
    if isinstance(exc, ldap_exc.LDAPResponseTimeoutError) or "timed out" in text:
        return f"no answer (silent for {timeout:g}s)"
    return f"unreachable ({type(exc).__name__}: {str(exc)[:160]})"


def _close(conn: ldap3.Connection) -> None:
    """Unbind, and make sure the socket is closed even when the server does not answer."""
    with contextlib.suppress(Exception):  # already broken; nothing more to report
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _by_mail(email: str) -> str:
    return f"(&(objectClass=inetOrgPerson)(mail={escape_filter_chars(email)}))"


NAME_ATTRS = ("cn", "sn", "givenName")


def _spellings(text: str) -> list[str]:
    """The forms a name is asked for in: slapd folds case itself, but maps capital sigma to
    medial sigma only, so "ΟΔΥΣΣΈΑΣ" would miss "Οδυσσέας". Python's lower() applies the final
    sigma rule and casefold() uses medial sigma everywhere: one of the three matches."""
    return list(dict.fromkeys((text, text.lower(), fold(text))))


def _any_of(attributes: Sequence[str], text: str) -> str:
    """``text`` in any of ``attributes``, in any case (see :func:`_spellings`)."""
    esc = escape_filter_chars
    alternatives = [f"({a}={esc(t)})" for t in _spellings(text) for a in attributes]
    return f"(|{''.join(alternatives)})"


def _holding(certificate: x509.Certificate) -> str:
    """A filter for the entries that may hold ``certificate``; the caller compares fingerprints.

    slapd's certificateExactMatch ("<serial>$<issuer DN>") alone is not enough: OpenLDAP
    normalises the issuer it extracts from the stored certificate differently from the DN in
    the assertion as soon as the issuer has non-ASCII characters ("O=Opérateur 1") or escaped
    spaces, and then nothing matches. So the entries named by the certificate's own e-mail
    addresses (the only ones :meth:`Directory.publish` files it under) are read too, and the
    exact match is kept as an alternative for entries written by other tools. A certificate
    without an e-mail address falls back to reading every entry holding certificates.
    """
    emails = certificate_emails(certificate)
    if not emails:
        return "(userCertificate=*)"
    assertion = f"{certificate.serial_number}${certificate.issuer.rfc4514_string()}"
    alternatives = [f"(mail={escape_filter_chars(e)})" for e in emails]
    alternatives.append(f"(userCertificate={escape_filter_chars(assertion)})")
    return f"(&(objectClass=inetOrgPerson)(|{''.join(alternatives)}))"


class LdapDirectory(Directory):
    """An LDAP directory under ``base_dn``; anonymous for lookups unless ``bind_dn`` is given.

    ``ldaps://`` URLs, and ``ldap://`` ones with ``starttls``, verify the server certificate
    (chain and host name) against ``ca_file`` only when given, else against the system CAs.
    """

    def __init__(
        self,
        url: str,
        base_dn: str,
        *,
        bind_dn: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        name: str | None = None,
        max_results: int = 100,
        ca_file: str | os.PathLike[str] | None = None,
        starttls: bool = False,
    ) -> None:
        self.url = url
        self.base_dn = base_dn
        self.name = name or f"{url}/{base_dn}"
        self.max_results = max_results
        self.timeout = timeout
        self._bind_dn = bind_dn
        self._password = password
        self._lock = threading.RLock()
        self._conn: ldap3.Connection | None = None
        #: why the last connection failed (see :meth:`_unavailable`)
        self._last_failure: tuple[type[DirectoryUnavailableError], str] | None = None
        self._starttls = starttls
        if starttls and url.lower().startswith("ldaps:"):
            raise DirectoryError(
                f"{self.name}: starttls is for ldap:// URLs; ldaps:// is TLS already"
            )
        # ldap3 does not check the server certificate unless told to: with TLS, always check.
        self._tls: _CheckedTls | None = None
        if starttls or url.lower().startswith("ldaps:"):
            self._tls = _CheckedTls(_tls_context(ca_file, self.name))
        try:
            self._server = ldap3.Server(
                url, connect_timeout=timeout, get_info=ldap3.NONE, tls=self._tls
            )
        except ldap_exc.LDAPException as exc:
            raise DirectoryError(f"invalid LDAP URL {url!r}: {exc}") from None

    def __repr__(self) -> str:  # the password stays out
        return f"<LdapDirectory {self.name}>"

    # -- connection --------------------------------------------------------------------------

    def _connection(self) -> ldap3.Connection:
        if self._conn is None or self._conn.closed:
            conn = None
            if self._tls is not None:
                self._tls.failure = None
            try:
                conn = ldap3.Connection(
                    self._server,
                    user=self._bind_dn,
                    password=self._password,
                    receive_timeout=max(1, math.ceil(self.timeout)),  # ldap3 packs an int
                    raise_exceptions=False,
                    read_only=False,
                )
                if self._starttls:
                    self._start_tls(conn)
                if not conn.bind():
                    result = conn.result or {}
                    raise DirectoryAccessError(
                        f"{self.name}: bind refused ({result.get('description', 'unknown')})"
                    )
            except BaseException as exc:
                if conn is not None:
                    _close(conn)
                if isinstance(exc, DirectoryError):
                    raise
                if isinstance(exc, _UNREACHABLE):
                    raise self._unavailable("", exc) from None
                if isinstance(exc, ldap_exc.LDAPException):
                    raise DirectoryError(f"{self.name}: {exc}") from None
                if isinstance(exc, _NOT_LDAP):
                    raise DirectoryUnavailableError(f"{self.name}: {_NOT_LDAP_WHY}") from None
                raise
            self._conn = conn
        return self._conn

    def _start_tls(self, conn: ldap3.Connection) -> None:
        """Open the connection and switch it to TLS before anything (the bind) is sent."""
        conn.open()
        try:
            started = conn.start_tls()
        except ldap_exc.LDAPStartTLSError as exc:
            if self._tls is not None and self._tls.failure:  # the handshake itself failed
                raise DirectoryTlsError(f"{self.name}: {self._tls.failure}") from None
            raise DirectoryTlsError(
                f"{self.name}: the server refused StartTLS ({str(exc)[:160]})"
            ) from None
        if not started:
            raise DirectoryTlsError(f"{self.name}: StartTLS could not be started")

    def _unavailable(self, op: str, exc: Exception) -> DirectoryUnavailableError:
        """The error for a transport failure: a TLS one says why, the others what happened.

        ldap3 marks an address that failed as unavailable and, until it tries again, says only
        "invalid server address": the last failure (and its kind) is kept to report it again.
        """
        failure = self._tls.failure if self._tls is not None else None
        if failure:
            self._last_failure = (DirectoryTlsError, failure)
        elif "invalid server address" not in str(exc) or self._last_failure is None:
            why = _unreachable(exc, self.timeout)
            if self._tls is None and isinstance(exc, ldap_exc.LDAPSessionTerminatedByServerError):
                why = "the server closed the connection (a TLS-only port? then use ldaps://)"
            self._last_failure = (DirectoryUnavailableError, why)
        kind, why = self._last_failure
        if kind is DirectoryTlsError:
            return kind(f"{self.name}: {why}")
        return kind(f"{self.name}: {op} failed, {why}" if op else f"{self.name}: {why}")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _close(conn)

    def _call(self, op: str, fn: Any, *args: Any, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
        """Run one ldap3 operation, mapping transport failures to our errors (one retry)."""
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None
                conn = self._connection()
                try:
                    ok = getattr(conn, fn)(*args, **kwargs)
                    return bool(ok), dict(conn.result or {}) | {"entries": conn.response or []}
                except _UNREACHABLE as exc:
                    self._drop()
                    if (
                        attempt == 1
                        and reused
                        and not isinstance(
                            exc, ldap_exc.LDAPResponseTimeoutError | ldap_exc.LDAPSocketReceiveError
                        )
                    ):
                        continue  # the server restarted: one fresh connection
                    raise self._unavailable(op, exc) from None
                except ldap_exc.LDAPException as exc:
                    self._drop()
                    raise DirectoryError(f"{self.name}: {op} failed: {exc}") from None
                except _NOT_LDAP:
                    self._drop()
                    raise DirectoryUnavailableError(
                        f"{self.name}: {op} failed, {_NOT_LDAP_WHY}"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(
        self, op: str, ok: bool, result: dict[str, Any], allow: tuple[int, ...] = ()
    ) -> None:
        code = result.get("result", 0)
        if ok or code == 0 or code in allow:
            return
        if code in (50, 8, 13, 48, 49):  # insufficientAccessRights, strongAuth..., invalidCreds
            raise ReadOnlyDirectoryError(
                f"{self.name}: {op} refused ({result.get('description')}); "
                "give bind credentials with write access"
            )
        if code in (3, 51, 52):  # timeLimitExceeded, busy, unavailable
            raise DirectoryUnavailableError(f"{self.name}: {op}: {result.get('description')}")
        raise DirectoryError(
            f"{self.name}: {op} failed ({result.get('description')}: "
            f"{str(result.get('message', ''))[:160]})"
        )

    # -- search ------------------------------------------------------------------------------

    @staticmethod
    def _filter(query: Query) -> str:
        esc = escape_filter_chars
        parts = ["(objectClass=inetOrgPerson)"]
        if query.email is not None:
            parts.append(f"(mail={esc(query.email)})")
        if query.name is not None:
            parts.append(_any_of(NAME_ATTRS, query.name))
        if query.professional_id is not None:
            parts.append(f"(employeeNumber={esc(query.professional_id)})")
        if query.organisation is not None:
            parts.append(_any_of(("o",), query.organisation))
        return f"(&{''.join(parts)})"

    def _search_raw(self, flt: str, limit: int) -> list[dict[str, Any]]:
        ok, result = self._call(
            "lookup",
            "search",
            self.base_dn,
            flt,
            search_scope=ldap3.SUBTREE,
            attributes=[*ATTRIBUTES.values(), CERT_ATTR, SMIME_ATTR],
            size_limit=limit,
            time_limit=max(1, int(self.timeout)),
        )
        self._check("lookup", ok, result, allow=(4, 32))  # sizeLimitExceeded, noSuchObject
        return [r for r in result["entries"] if r.get("type") == "searchResEntry"]

    def search(self, query: Query) -> LookupResult:
        problems: list[str] = []
        raw = self._search_raw(self._filter(query), self.max_results + 1)
        if len(raw) > self.max_results:
            problems.append(
                f"{self.name}: more than {self.max_results} entries match; refine the lookup"
            )
            raw = raw[: self.max_results]
        entries = []
        for item in raw:
            entry = self._decode(item, query, problems)
            if entry is not None:
                entries.append(entry)
        entries.sort(key=lambda e: e.email)
        return LookupResult(tuple(entries), tuple(problems))

    def _decode(
        self, item: dict[str, Any], query: Query | None, problems: list[str]
    ) -> DirectoryEntry | None:
        dn = str(item.get("dn", "?"))
        where = f"{self.name} entry {dn}"
        raw = {k.lower(): v for k, v in (item.get("raw_attributes") or {}).items()}
        fields: dict[str, str] = {}
        for field, attr in ATTRIBUTES.items():
            values = raw.get(attr.lower()) or []
            texts = []
            for v in values:
                try:
                    texts.append(bytes(v).decode("utf-8"))
                except UnicodeDecodeError:
                    problems.append(f"{where}: attribute {attr} is not UTF-8; skipped")
                    return None
            if field == "email" and query is not None and query.email in [t.lower() for t in texts]:
                fields[field] = query.email or ""
            elif texts:
                fields[field] = texts[0]
        if "email" not in fields:
            problems.append(f"{where}: entry has no mail attribute; skipped")
            return None
        certs = decode_all(_certificate_blobs(raw, where, problems), where, problems)
        return build_entry(fields, certs, where, problems, self.name)

    # -- changes -----------------------------------------------------------------------------

    def _dn_for(self, email: str) -> str:
        return f"mail={escape_rdn(email)},{self.base_dn}"

    def _find(self, flt: str) -> list[tuple[str, list[x509.Certificate]]]:
        """(dn, certificates) of the entries matching ``flt``, malformed values dropped."""
        found = []
        for item in self._search_raw(flt, 0):
            problems: list[str] = []
            raw = {k.lower(): v for k, v in (item.get("raw_attributes") or {}).items()}
            blobs = _certificate_blobs(raw, "", problems)
            unique = {fingerprint(c): c for c in decode_all(blobs, "", problems)}
            found.append((str(item["dn"]), list(unique.values())))
        return found

    def _set_certificates(self, dn: str, certs: list[x509.Certificate]) -> None:
        if certs:
            changes = {
                CERT_ATTR: [(ldap3.MODIFY_REPLACE, [der(c) for c in certs])],
                SMIME_ATTR: [(ldap3.MODIFY_REPLACE, [smime_bundle(certs)])],
            }
            ok, result = self._call("withdraw", "modify", dn, changes)
            self._check("withdraw", ok, result)
        else:
            ok, result = self._call("withdraw", "delete", dn)
            self._check("withdraw", ok, result, allow=(32,))

    def _publish(self, entry: DirectoryEntry) -> DirectoryEntry:
        existing = self._find(_by_mail(entry.email))
        if not existing:
            ok, result = self._call(
                "publish", "add", self._dn_for(entry.email), None, entry_attributes(entry)
            )
            self._check("publish", ok, result)
        else:
            dn, certs = existing[0]
            merged = entry.replace(certificates=(*certs, *entry.certificates))
            attrs = entry_attributes(merged)
            changes: dict[str, list[tuple[Any, list[Any]]]] = {}
            for field, attr in ATTRIBUTES.items():
                if field != "email":
                    changes[attr] = [(ldap3.MODIFY_REPLACE, attrs.get(attr, []))]
            changes[CERT_ATTR] = [(ldap3.MODIFY_REPLACE, attrs[CERT_ATTR])]
            changes[SMIME_ATTR] = [(ldap3.MODIFY_REPLACE, attrs[SMIME_ATTR])]
            ok, result = self._call("publish", "modify", dn, changes)
            self._check("publish", ok, result)
        stored = self.search(Query(email=entry.email)).entries
        return stored[0] if stored else entry

    def _withdraw_email(self, email: str) -> int:
        count = 0
        for dn, certs in self._find(_by_mail(email)):
            ok, result = self._call("withdraw", "delete", dn)
            self._check("withdraw", ok, result, allow=(32,))
            count += len(certs)
        return count

    def _withdraw_certificates(
        self,
        predicate: _CertPredicate,
        certificate: x509.Certificate | None,
        serial: int | None,
    ) -> int:
        # by serial only: every entry holding certificates must be read
        flt = _holding(certificate) if certificate is not None else "(userCertificate=*)"
        removed = 0
        for dn, certs in self._find(flt):
            keep = [c for c in certs if not predicate(c)]
            if len(keep) != len(certs):
                removed += len(certs) - len(keep)
                self._set_certificates(dn, keep)
        return removed

    def close(self) -> None:
        with self._lock:
            self._drop()


def ldif_record(entry: DirectoryEntry, base_dn: str) -> str:
    """One entry as an LDIF record (binary values base64), for offline slapadd loads."""
    import base64

    lines = [f"dn: mail={escape_rdn(entry.email)},{base_dn}"]
    for attr, values in entry_attributes(entry).items():
        for value in values:
            if isinstance(value, bytes):
                lines.append(f"{attr}:: {base64.b64encode(value).decode()}")
            elif value.isascii() and not value.startswith((" ", ":", "<")):
                lines.append(f"{attr}: {value}")
            else:
                lines.append(f"{attr}:: {base64.b64encode(value.encode()).decode()}")
    return "\n".join(lines) + "\n\n"
