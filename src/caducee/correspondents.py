"""What each correspondent can decrypt, learnt from their signed messages (RFC 8551 §2.7.1).

A correspondent's SMIMECapabilities come with every message they sign. We remember the newest
announcement per e-mail address, taken only from signatures that verified, and use it to choose
the strongest algorithms they support when writing to them. Configuration can pin a correspondent
(for example a gpgsm user) with ``set_fixed``. Stored as JSON, mode 0600, in the data directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import tempfile
from collections.abc import Iterable

from cryptography import x509

from caducee.core.capabilities import LEGACY_GPGSM, Capabilities
from caducee.core.message import OpenedMessage
from caducee.errors import ConfigError, MalformedMessageError

#: Named profiles usable in configuration instead of a DER blob.
PROFILES = {"legacy-gpgsm": LEGACY_GPGSM, "default": Capabilities()}


def data_dir() -> pathlib.Path:
    """``$CADUCEE_DATA_DIR``, else ``$XDG_DATA_HOME/caducee``, else ``~/.local/share/caducee``."""
    if os.environ.get("CADUCEE_DATA_DIR"):
        return pathlib.Path(os.environ["CADUCEE_DATA_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or str(pathlib.Path.home() / ".local" / "share")
    return pathlib.Path(base) / "caducee"


class CorrespondentStore:
    def __init__(self, path: pathlib.Path | None = None) -> None:
        self.path = path or data_dir() / "correspondents.json"
        self._data: dict[str, dict[str, str]] = self._load()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: unreadable correspondents file ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.path}: unreadable correspondents file")
        return raw

    def get(self, email: str) -> Capabilities | None:
        entry = self._data.get(email.lower())
        if entry is None:
            return None
        if "profile" in entry:
            return PROFILES[entry["profile"]]
        try:
            return Capabilities.from_der(bytes.fromhex(entry["capabilities"]))
        except (KeyError, ValueError, MalformedMessageError):
            return None  # a damaged entry: fall back to defaults rather than refuse to write

    def set_fixed(self, email: str, profile: str) -> None:
        if profile not in PROFILES:
            raise ConfigError(f"unknown capability profile {profile!r} ({', '.join(PROFILES)})")
        self._data[email.lower()] = {"profile": profile}
        self._save()

    def learn(self, opened: OpenedMessage) -> list[str]:
        """Record the capabilities announced by every valid signer; returns the e-mails updated."""
        updated = []
        for layer in opened.layers:
            if layer.signed is None:
                continue
            for signer in layer.signed.signers:
                if not signer.valid or signer.certificate is None or signer.capabilities is None:
                    continue
                when = signer.signing_time
                for email in certificate_emails(signer.certificate):
                    if self._newer(email, when):
                        self._data[email] = {
                            "capabilities": signer.capabilities.to_der().hex(),
                            "seen": when.isoformat() if when else "",
                        }
                        updated.append(email)
        if updated:
            self._save()
        return updated

    def _newer(self, email: str, when: dt.datetime | None) -> bool:
        entry = self._data.get(email)
        if entry is None:
            return True
        if "profile" in entry:  # pinned by configuration
            return False
        seen = entry.get("seen")
        return when is None or not seen or dt.datetime.fromisoformat(seen) <= when

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".correspondents.")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(self._data, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}") from None


def certificate_emails(cert: x509.Certificate) -> Iterable[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = [e.lower() for e in san.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        found = []
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
    return dict.fromkeys([*found, *(str(a.value).lower() for a in attrs)])
