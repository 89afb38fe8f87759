"""Several operators' directories queried together, with a TTL cache and a hard time limit.

Each operator is asked in parallel. Within ``ttl`` an answer comes from the cache without asking;
when an operator is down or silent past ``timeout``, its last answer (up to ``max_stale`` old) is
used and the fact is reported in ``problems``; with no usable answer at all the lookup raises
:class:`DirectoryUnavailableError` naming the operators that failed. It never waits longer than
``timeout`` (plus the time to merge results).

A certificate found is a candidate: pass ``validator`` (for example a wrapper around the pki
layer's path validation) to keep only certificates that validate; refusals become problems.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import pathlib
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography import x509

from caducee.directory.api import (
    Directory,
    DirectoryEntry,
    DirectoryUnavailableError,
    LookupResult,
    Query,
    ReadOnlyDirectoryError,
    _CertPredicate,
)
from caducee.errors import CaduceeError, ConfigError, DirectoryError
from caducee.serials import format_serial

__all__ = [
    "CONFIG_KEYS",
    "OPERATOR_KEYS",
    "FederatedDirectory",
    "Validator",
    "load_config",
    "load_federation",
    "open_directory",
]

#: Called once per candidate certificate with the entry it came in (for its e-mail). Return
#: False, or raise a CaduceeError (TrustError), to refuse it; anything else accepts it.
Validator = Callable[[x509.Certificate, DirectoryEntry], object]


class FederatedDirectory(Directory):
    """Read-only view over several directories (one per operator)."""

    def __init__(
        self,
        directories: Sequence[Directory],
        *,
        ttl: float = 300.0,
        max_stale: float = 7 * 86400.0,
        timeout: float = 5.0,
        validator: Validator | None = None,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        name: str = "federation",
    ) -> None:
        if not directories:
            raise ConfigError("a federation needs at least one directory")
        names = [d.name for d in directories]
        if len(set(names)) != len(names):
            raise ConfigError(f"directory names must be unique, got {names}")
        self.directories = tuple(directories)
        self.ttl = ttl
        self.max_stale = max_stale
        self.timeout = timeout
        self.validator = validator
        self.name = name
        self._clock = clock
        self._cache: collections.OrderedDict[tuple[str, Query], tuple[float, LookupResult]] = (
            collections.OrderedDict()
        )
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._pool = cf.ThreadPoolExecutor(
            max_workers=2 * len(directories) + 2, thread_name_prefix="directory"
        )

    # -- cache -------------------------------------------------------------------------------

    def _cached(self, key: tuple[str, Query]) -> tuple[float, LookupResult] | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _store(self, key: tuple[str, Query], result: LookupResult) -> None:
        with self._lock:
            self._cache[key] = (self._clock(), result)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # -- lookup ------------------------------------------------------------------------------

    def search(self, query: Query) -> LookupResult:
        now = self._clock()
        answers: dict[str, LookupResult] = {}
        pending: dict[cf.Future[LookupResult], Directory] = {}
        for directory in self.directories:
            hit = self._cached((directory.name, query))
            if hit is not None and now - hit[0] <= self.ttl:
                answers[directory.name] = hit[1]
            else:
                pending[self._pool.submit(directory.search, query)] = directory
        done, not_done = cf.wait(pending, timeout=self.timeout)
        failures: dict[str, str] = {}
        for future in done:
            directory = pending[future]
            try:
                result = future.result()
            except DirectoryError as exc:
                failures[directory.name] = str(exc)
                continue
            self._store((directory.name, query), result)
            answers[directory.name] = result
        for future in not_done:
            future.cancel()
            failures[pending[future].name] = f"no answer within {self.timeout:g}s"
        problems: list[str] = []
        for dname, reason in sorted(failures.items()):
            hit = self._cached((dname, query))
            if hit is not None and self._clock() - hit[0] <= self.max_stale:
                age = self._clock() - hit[0]
                problems.append(
                    f"{dname} unavailable ({reason}); using its answer cached {age:.0f}s ago"
                )
                answers[dname] = hit[1]
            else:
                problems.append(f"{dname} unavailable ({reason})")
        entries: list[DirectoryEntry] = []
        for directory in self.directories:  # configuration order, stable
            answer = answers.get(directory.name)
            if answer is None:
                continue
            problems.extend(answer.problems)
            for entry in answer.entries:
                entry = entry.replace(source=directory.name)
                checked = self._validate(entry, problems)
                if checked is not None:
                    entries.append(checked)
        if not entries and len(answers) < len(self.directories):
            raise DirectoryUnavailableError(
                f"no entry for {query.describe()}: "
                + "; ".join(p for p in problems if "unavailable" in p)
            )
        return LookupResult(tuple(entries), tuple(problems))

    def _validate(self, entry: DirectoryEntry, problems: list[str]) -> DirectoryEntry | None:
        if self.validator is None:
            return entry
        kept = []
        for cert in entry.certificates:
            where = (
                f"{entry.source}: certificate {format_serial(cert.serial_number)} of {entry.email}"
            )
            try:
                verdict = self.validator(cert, entry)
            except CaduceeError as exc:
                problems.append(f"{where} refused: {exc}")
                continue
            if verdict is False:
                problems.append(f"{where} refused by the validator")
                continue
            kept.append(cert)
        if not kept:
            problems.append(f"{entry.source}: entry {entry.email} has no valid certificate")
            return None
        return entry.replace(certificates=tuple(kept))

    # -- read-only ---------------------------------------------------------------------------

    def _publish(self, entry: DirectoryEntry) -> DirectoryEntry:
        raise ReadOnlyDirectoryError("publish to one operator's directory, not to the federation")

    def _withdraw_email(self, email: str) -> int:
        raise ReadOnlyDirectoryError("withdraw from one operator's directory, not the federation")

    def _withdraw_certificates(
        self,
        predicate: _CertPredicate,
        certificate: x509.Certificate | None,
        serial: int | None,
    ) -> int:
        return self._withdraw_email("")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for directory in self.directories:
            directory.close()


# --- configuration -----------------------------------------------------------------------------


def _path(value: object, base: pathlib.Path | None) -> pathlib.Path | None:
    """A file named in a configuration: relative to the configuration's folder when known."""
    if value is None:
        return None
    file = pathlib.Path(str(value)).expanduser()
    return base / file if base is not None and not file.is_absolute() else file


def _secret(spec: Mapping[str, Any], key: str, base: pathlib.Path | None) -> str | None:
    file = _path(spec.get(f"{key}_file"), base)
    if file is None:
        return None
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {key} file {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key} file {file}: not UTF-8 text") from None


#: keys of the ``[directory]`` table and of each ``[[directory.operators]]`` table
CONFIG_KEYS = ("operators", "ttl", "max_stale", "timeout")
OPERATOR_KEYS = (
    "name", "url", "timeout", "base_dn", "bind_dn", "password", "password_file", "token",
    "token_file", "ca_file", "starttls",
)  # fmt: skip


def _only(table: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    """Refuse unknown keys by name: a typo ("ttll") must not silently keep a default."""
    from caducee.config import did_you_mean

    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(str(key), known)}")


def _number(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}: '{key}' must be a number of seconds, got {value!r:.40}")
    return float(value)


def open_directory(
    spec: str | Mapping[str, Any],
    *,
    base: pathlib.Path | None = None,
    create: bool = True,
    **overrides: Any,
) -> Directory:
    """A directory from a URL or a configuration table.

    URLs: ``sqlite:///abs/path.sqlite`` (or a plain file path), ``ldap[s]://host:port/<base DN>``,
    ``http[s]://host:port``. Tables add ``name``, ``timeout``, ``bind_dn``, ``password_file``
    (LDAP), ``token_file`` (HTTP). ``create``: whether a missing SQLite file may be created
    (for publishing; a lookup passes False). A missing folder is never created.
    """
    table: dict[str, Any] = {"url": spec} if isinstance(spec, str) else dict(spec)
    table.update({k: v for k, v in overrides.items() if v is not None})
    url = str(table.get("url", ""))
    if not url:
        raise ConfigError("a directory needs a url")
    name = table.get("name")
    timeout = _number(table, "timeout", 5.0, f"directory {url[:80]}")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("ldap", "ldaps"):
        from caducee.directory.ldap import LdapDirectory

        parts = urllib.parse.urlsplit(url)
        base_dn = str(table.get("base_dn") or urllib.parse.unquote(parts.path.lstrip("/")))
        if not base_dn:
            raise ConfigError(f"LDAP directory {url}: give the base DN (in the URL path)")
        password = table.get("password") or _secret(table, "password", base)
        starttls = table.get("starttls", False)
        if not isinstance(starttls, bool):
            raise ConfigError(f"LDAP directory {url}: 'starttls' must be true or false")
        return LdapDirectory(
            f"{parts.scheme}://{parts.netloc}",
            base_dn,
            bind_dn=table.get("bind_dn"),
            password=password,
            timeout=timeout,
            name=name,
            ca_file=_path(table.get("ca_file"), base),
            starttls=starttls,
        )
    if scheme in ("http", "https"):
        from caducee.directory.http import HttpDirectory

        token = table.get("token") or _secret(table, "token", base)
        return HttpDirectory(url, token=token, timeout=timeout, name=name)
    from caducee.directory.sqlite import SqliteDirectory

    if scheme == "sqlite":
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    elif scheme in ("", "file") or len(scheme) == 1:
        path = url.removeprefix("file://")
    else:
        raise ConfigError(f"unknown directory URL scheme {scheme!r} in {url[:80]}")
    file = pathlib.Path(path).expanduser()
    if base is not None and not file.is_absolute() and path != ":memory:":
        file = base / file
    return SqliteDirectory(
        path if path == ":memory:" else file, name=name, timeout=timeout, create=create
    )


def load_federation(
    config: Mapping[str, Any],
    *,
    validator: Validator | None = None,
    base: pathlib.Path | None = None,
) -> FederatedDirectory:
    """Build a federation from ``{"ttl", "max_stale", "timeout", "operators": [tables]}``."""
    where = "directory configuration"
    _only(config, CONFIG_KEYS, where)
    operators = config.get("operators")
    if not isinstance(operators, list) or not operators:
        raise ConfigError(f"{where}: 'operators' must list at least one directory")
    timeout = _number(config, "timeout", 5.0, where)
    ttl = _number(config, "ttl", 300.0, where)
    max_stale = _number(config, "max_stale", 7 * 86400.0, where)
    for i, op in enumerate(operators):
        if not isinstance(op, Mapping):
            raise ConfigError(f"{where}: operator #{i + 1} is not a table")
        _only(op, OPERATOR_KEYS, f"{where}: operator #{i + 1}")
    directories: list[Directory] = []
    try:
        for op in operators:
            # lookups only: a database file that does not exist yet is not created
            directories.append(open_directory({"timeout": timeout, **op}, base=base, create=False))
        return FederatedDirectory(
            directories, ttl=ttl, max_stale=max_stale, timeout=timeout, validator=validator
        )
    except BaseException:
        for directory in directories:
            directory.close()
        raise


def load_config(path: str | pathlib.Path) -> dict[str, Any]:
    """Read the ``[directory]`` table of a TOML file (or the whole file if it has none)."""
    file = pathlib.Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML ({exc})") from None
    table = data.get("directory", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [directory] must be a table")
    return table
