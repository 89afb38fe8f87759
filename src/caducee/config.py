"""The workstation configuration: one TOML file, in the platform's configuration directory.

``$XDG_CONFIG_HOME/caducee/config.toml`` (``~/.config/caducee/config.toml``) on Linux,
``~/Library/Application Support/caducee/config.toml`` on macOS, ``%APPDATA%\\caducee`` on
Windows; ``--config PATH`` overrides it. Relative paths inside are relative to the file's own
directory. Secrets are never written in it: PINs come from the card prompt, passwords from
``*_file`` entries. See docs/messaging.md for every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import pathlib
import sys
import tomllib
from collections.abc import Collection, Mapping
from typing import Any

from caducee.core.algorithms import CIPHER_PREFERENCE
from caducee.errors import ConfigError

__all__ = [
    "Config",
    "IdentityConfig",
    "MailServer",
    "PolicyConfig",
    "SourceConfig",
    "TrustConfig",
    "default_config_path",
    "default_data_dir",
    "dump_toml",
    "load_config",
    "write_config",
]

SECURITY = ("tls", "starttls", "none")
#: Where the encryption key lives with a card: on it, or in a keystore the card opens.
ENCRYPTION_KEY_MODES = ("card", "keystore")


def default_config_path() -> pathlib.Path:
    if sys.platform == "darwin":
        base = pathlib.Path.home() / "Library" / "Application Support"
    elif os.name == "nt":
        base = pathlib.Path(os.environ.get("APPDATA") or pathlib.Path.home())
    else:
        base = pathlib.Path(os.environ.get("XDG_CONFIG_HOME") or pathlib.Path.home() / ".config")
    return base / "caducee" / "config.toml"


def default_data_dir() -> pathlib.Path:
    if sys.platform == "darwin":
        return pathlib.Path.home() / "Library" / "Application Support" / "caducee"
    if os.name == "nt":
        return pathlib.Path(os.environ.get("LOCALAPPDATA") or pathlib.Path.home()) / "caducee"
    base = os.environ.get("XDG_DATA_HOME") or str(pathlib.Path.home() / ".local" / "share")
    return pathlib.Path(base) / "caducee"


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    email: str
    name: str | None = None
    card: str | None = None  # PKCS#11 URI of the card (signature and decryption keys on it)
    signing_key: pathlib.Path | None = None
    signing_cert: pathlib.Path | None = None
    decryption_key: pathlib.Path | None = None
    decryption_cert: pathlib.Path | None = None
    key_password_file: pathlib.Path | None = None
    #: "card" (the encryption key is on the card) or "keystore" (in ``keystore``, a local file
    #: that only the card opens; the signature key stays on the card)
    encryption_key: str = "card"
    keystore: pathlib.Path | None = None
    keystore_history: tuple[pathlib.Path, ...] = ()  # earlier keystores (older messages)


@dataclasses.dataclass(frozen=True)
class TrustConfig:
    anchors: tuple[pathlib.Path, ...] = ()
    intermediates: tuple[pathlib.Path, ...] = ()
    crls: tuple[pathlib.Path, ...] = ()
    fetch_crls: bool = True  # also fetch CRLs from the certificates' distribution points


@dataclasses.dataclass(frozen=True)
class MailServer:
    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password_file: pathlib.Path | None = None
    timeout: float = 30.0
    #: CA certificate(s) (PEM or DER) trusted for this server *in addition to* the system's
    #: trust store: for an operator whose server certificate comes from a private CA.
    ca_file: pathlib.Path | None = None

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read password file {self.password_file}: {exc.strerror}"
            ) from None


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One mailbox to read: IMAP (``server`` set) or a local Maildir (``maildir`` set)."""

    name: str
    server: MailServer | None = None
    mailbox: str = "INBOX"
    maildir: pathlib.Path | None = None


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    allow_plaintext: bool = True
    minimum_cipher: str = "AES_128_CBC"
    preferred_cipher: str | None = None
    mdn_on_fetch: bool = False
    request_mdn: bool = True
    poll_interval: float = 60.0
    fetch_workers: int | None = None  # None: one per core beyond the first (at most 4)


@dataclasses.dataclass(frozen=True)
class Config:
    path: pathlib.Path | None
    identity: IdentityConfig
    trust: TrustConfig = TrustConfig()
    directory: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    address_book: tuple[pathlib.Path, ...] = ()
    smtp: MailServer | None = None
    sources: tuple[SourceConfig, ...] = ()
    policy: PolicyConfig = PolicyConfig()
    data_dir: pathlib.Path = dataclasses.field(default_factory=default_data_dir)

    @property
    def store_path(self) -> pathlib.Path:
        return self.data_dir / "messages.sqlite"


# -- reading -------------------------------------------------------------------------------------


#: The keys of each table (see docs/messaging.md): anything else is refused.
_ROOT_KEYS = (
    "data_dir", "address_book", "identity", "trust", "directory", "smtp", "imap", "maildir",
    "policy",
)  # fmt: skip
_IDENTITY_KEYS = tuple(f.name for f in dataclasses.fields(IdentityConfig))
_TRUST_KEYS = tuple(f.name for f in dataclasses.fields(TrustConfig))
_POLICY_KEYS = tuple(f.name for f in dataclasses.fields(PolicyConfig))
_SERVER_KEYS = ("host", "port", "security", "username", "password_file", "timeout", "ca_file")
_IMAP_KEYS = (*_SERVER_KEYS, "name", "mailbox")
_MAILDIR_KEYS = ("name", "path")
#: ``[directory]`` and ``[[directory.operators]]``, as read by caducee.directory.federation.


def did_you_mean(key: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (known keys: {', '.join(sorted(known))})"


class _Table:
    """A TOML table read with the file name and table path in every error."""

    def __init__(self, data: Mapping[str, Any], where: str, base: pathlib.Path) -> None:
        self.data = data
        self.where = where
        self.base = base

    def _fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.where}: '{key}' {what}")

    def only(self, known: Collection[str]) -> None:
        """Refuse keys this table does not define: a typo must not silently keep a default."""
        for key in self.data:
            if key not in known:
                raise ConfigError(f"{self.where}: unknown key '{key}'{did_you_mean(key, known)}")

    def text(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            if required:
                raise self._fail(key, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "must be a non-empty string")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "must be true or false")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self._fail(key, "must be a positive number")
        return float(value)

    def count_or_auto(self, key: str) -> int | None:
        """A count >= 0, or "auto" (None)."""
        value = self.data.get(key, "auto")
        if value == "auto":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
            raise self._fail(key, 'must be "auto" or a whole number from 0 to 64')
        return value

    def path(self, key: str) -> pathlib.Path | None:
        value = self.text(key)
        return None if value is None else self._resolve(value)

    def _resolve(self, value: str) -> pathlib.Path:
        path = pathlib.Path(value).expanduser()
        return path if path.is_absolute() else self.base / path

    def paths(self, key: str) -> tuple[pathlib.Path, ...]:
        value = self.data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "must be a list of file paths")
        return tuple(self._resolve(v) for v in value)

    def table(self, key: str) -> _Table:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "must be a table")
        return _Table(value, f"{self.where} [{key}]", self.base)

    def tables(self, key: str) -> list[_Table]:
        value = self.data.get(key, [])
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._fail(key, "must be a table or an array of tables")
        return [_Table(v, f"{self.where} [{key}] #{i + 1}", self.base) for i, v in enumerate(value)]


def _server(t: _Table, default_port: int, tls_port: int) -> MailServer:
    security = t.text("security", "starttls")
    if security not in SECURITY:
        raise ConfigError(f"{t.where}: 'security' must be one of {', '.join(SECURITY)}")
    host = t.text("host", required=True)
    assert host is not None and security is not None
    port = t.data.get("port", tls_port if security == "tls" else default_port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{t.where}: 'port' must be a port number")
    username = t.text("username")
    password_file = t.path("password_file")
    if (username is None) != (password_file is None):
        raise ConfigError(f"{t.where}: give both 'username' and 'password_file', or neither")
    return MailServer(
        host,
        port,
        security,
        username,
        password_file,
        t.number("timeout", 30.0),
        t.path("ca_file"),
    )


def _cipher(t: _Table, key: str, default: str | None) -> str | None:
    value = t.text(key, default)
    if value is None:
        return None
    name = value.upper().replace("-", "_")
    if name not in {c.name for c in CIPHER_PREFERENCE}:  # what the agent negotiates
        choices = ", ".join(c.label for c in CIPHER_PREFERENCE)
        raise ConfigError(f"{t.where}: '{key}' must be one of {choices}")
    return name


def _check_encryption_key(identity: IdentityConfig, where: str) -> None:
    if identity.encryption_key not in ENCRYPTION_KEY_MODES:
        raise ConfigError(f'{where}: \'encryption_key\' must be "card" or "keystore"')
    if identity.encryption_key == "card":
        if identity.keystore is not None or identity.keystore_history:
            raise ConfigError(
                f"{where}: 'keystore' is only used with encryption_key = \"keystore\""
            )
        return
    if identity.card is None or identity.keystore is None:
        raise ConfigError(
            f"{where}: encryption_key = \"keystore\" needs 'card' (a PKCS#11 URI) and "
            "'keystore' (the keystore file)"
        )


def parse_config(data: Mapping[str, Any], path: pathlib.Path | None) -> Config:
    where = str(path) if path else "configuration"
    base = path.parent if path else pathlib.Path.cwd()
    root = _Table(data, where, base)
    root.only(_ROOT_KEYS)
    ident = root.table("identity")
    ident.only(_IDENTITY_KEYS)
    email = ident.text("email", required=True)
    assert email is not None
    if "@" not in email:
        raise ConfigError(f"{ident.where}: 'email' must be an e-mail address")
    identity = IdentityConfig(
        email=email.strip().lower(),
        name=ident.text("name"),
        card=ident.text("card"),
        signing_key=ident.path("signing_key"),
        signing_cert=ident.path("signing_cert"),
        decryption_key=ident.path("decryption_key"),
        decryption_cert=ident.path("decryption_cert"),
        key_password_file=ident.path("key_password_file"),
        encryption_key=ident.text("encryption_key", "card") or "card",
        keystore=ident.path("keystore"),
        keystore_history=ident.paths("keystore_history"),
    )
    _check_encryption_key(identity, ident.where)
    software = (identity.decryption_key, identity.decryption_cert)
    if identity.card is None and None in software:
        raise ConfigError(
            f"{ident.where}: give 'card' (a PKCS#11 URI) or software keys"
            " ('decryption_key' and 'decryption_cert', plus 'signing_key' and 'signing_cert')"
        )
    if (identity.signing_key is None) != (identity.signing_cert is None):
        raise ConfigError(f"{ident.where}: give both 'signing_key' and 'signing_cert'")
    t = root.table("trust")
    t.only(_TRUST_KEYS)
    trust = TrustConfig(
        t.paths("anchors"), t.paths("intermediates"), t.paths("crls"), t.flag("fetch_crls", True)
    )
    smtp = root.table("smtp")
    smtp.only(_SERVER_KEYS)
    sources: list[SourceConfig] = []
    for s in root.tables("imap"):
        s.only(_IMAP_KEYS)
        sources.append(
            SourceConfig(
                s.text("name", f"imap{len(sources) + 1}") or "imap",
                server=_server(s, 143, 993),
                mailbox=s.text("mailbox", "INBOX") or "INBOX",
            )
        )
    for s in root.tables("maildir"):
        s.only(_MAILDIR_KEYS)
        sources.append(
            SourceConfig(
                s.text("name", f"maildir{len(sources) + 1}") or "maildir", maildir=s.path("path")
            )
        )
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: mailbox names must be unique, got {names}")
    p = root.table("policy")
    p.only(_POLICY_KEYS)
    policy = PolicyConfig(
        allow_plaintext=p.flag("allow_plaintext", True),
        minimum_cipher=_cipher(p, "minimum_cipher", "AES_128_CBC") or "AES_128_CBC",
        preferred_cipher=_cipher(p, "preferred_cipher", None),
        mdn_on_fetch=p.flag("mdn_on_fetch", False),
        request_mdn=p.flag("request_mdn", True),
        poll_interval=p.number("poll_interval", 60.0),
        fetch_workers=p.count_or_auto("fetch_workers"),
    )
    from caducee.directory.federation import CONFIG_KEYS, OPERATOR_KEYS  # one list of keys

    directory = root.table("directory")
    directory.only(CONFIG_KEYS)
    for op in directory.tables("operators"):
        op.only(OPERATOR_KEYS)
    data_dir = root.path("data_dir") or default_data_dir()
    return Config(
        path=path,
        identity=identity,
        trust=trust,
        directory=directory.data,
        address_book=root.paths("address_book"),
        smtp=_server(smtp, 587, 465) if smtp.data else None,
        sources=tuple(sources),
        policy=policy,
        data_dir=data_dir,
    )


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration (``path`` or the platform default); one-line errors."""
    file = pathlib.Path(path) if path is not None else default_config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no configuration at {file}: run 'caducee init' first") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); "
            "save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML ({exc})") from None
    return parse_config(data, file.resolve())


# -- writing -------------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | pathlib.Path):
        text = str(value)
        escaped = "".join(
            {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}.get(ch, ch)
            if ch in '"\\\n\t' or ch.isprintable()
            else f"\\u{ord(ch):04x}"
            for ch in text
        )
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _value(key)


def dump_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """TOML for plain data (tables, arrays of tables, strings, numbers, booleans, lists)."""
    lines: list[str] = []
    nested: list[str] = []
    for key, value in data.items():
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        if isinstance(value, Mapping):
            nested.append(f"\n[{name}]\n" + dump_toml(value, name))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for item in value:
                nested.append(f"\n[[{name}]]\n" + dump_toml(item, name))
        elif value is not None:
            lines.append(f"{_key(key)} = {_value(value)}")
    return "\n".join(lines) + ("\n" if lines else "") + "".join(nested)


def write_config(path: str | os.PathLike[str], data: Mapping[str, Any]) -> pathlib.Path:
    """Write ``data`` as TOML, mode 0600 (it names key files), refusing to overwrite."""
    file = pathlib.Path(path)
    text = dump_toml(data)
    parse_config(tomllib.loads(text), file.resolve())  # never write something we cannot read
    try:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{file} already exists; remove it or use --config") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {file}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return file
