"""The embedded SQLite directory: persistence, bad rows, result limits."""

from __future__ import annotations

import pathlib
import sqlite3

from caducee import devpki
from caducee.directory.api import der
from caducee.directory.sqlite import SqliteDirectory


def test_entries_survive_reopening(tmp_path: pathlib.Path, pki) -> None:
    path = tmp_path / "d.sqlite"
    with SqliteDirectory(path) as directory:
        directory.publish(pki.carol.encryption.certificate, professional_id="10000000001")
    with SqliteDirectory(path) as directory:
        (entry,) = directory.lookup(professional_id="10000000001").entries
        assert entry.encryption_certificates == (pki.carol.encryption.certificate,)
        assert directory.count() == 1


ADD = (
    "INSERT INTO entries (email, common_name, surname, given_name, profession, organisation, "
    "professional_id) VALUES "
)


def test_bad_rows_are_skipped_and_reported(tmp_path: pathlib.Path, pki) -> None:
    path = tmp_path / "d.sqlite"
    with SqliteDirectory(path) as directory:
        directory.publish(pki.alice.signing.certificate)
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO certificates VALUES ('x', 'alice@op1.test', '1', x'00')")
        db.execute(ADD + "('bad@op1.test', 'Bad', 'Bad', '', '', '', 'abc')")
        db.execute(
            "INSERT INTO certificates VALUES ('y', 'bad@op1.test', '2', ?)",
            (der(pki.alice.encryption.certificate),),
        )
        db.execute(ADD + "('none@op1.test', 'alice', 'x', '', '', '', '')")
    db.close()
    with SqliteDirectory(path, name="db") as directory:
        result = directory.lookup(name="alice")
        assert [e.email for e in result.entries] == ["alice@op1.test"]
        assert result.entries[0].certificates == (pki.alice.signing.certificate,)
        assert len(result.problems) == 2
        assert (
            "db entry alice@op1.test certificate #2: unreadable certificate" in result.problems[0]
        )
        assert "none@op1.test has no usable certificate" in result.problems[1]
        bad = directory.lookup(email="bad@op1.test")
        assert bad.entries == ()
        assert "bound to alice@op1.test, not bad@op1.test" in bad.problems[0]
        assert "11 digits" in bad.problems[1]


def test_lookups_are_capped(tmp_path: pathlib.Path, pki) -> None:
    with SqliteDirectory(tmp_path / "d.sqlite", max_results=3, name="db") as directory:
        for i in range(5):
            ident = devpki.make_identity(pki.ca, f"doc{i}@op1.test", kind="p256", name="Dr Same")
            directory.publish(ident.encryption.certificate, organisation="CHU")
        result = directory.lookup(organisation="chu")
        assert len(result.entries) == 3
        assert result.problems == ("db: more than 3 entries match; refine the lookup",)


def test_bulk_load_checks_every_entry(tmp_path: pathlib.Path, pki) -> None:
    import pytest

    from caducee.directory.api import InvalidEntryError, entry_from_certificate

    good = [entry_from_certificate(i.encryption.certificate) for i in (pki.alice, pki.bob)]
    with SqliteDirectory(tmp_path / "d.sqlite") as directory:
        assert directory.bulk_load(good) == 2
        bad = good[0].replace(email="eve@op1.test")
        with pytest.raises(InvalidEntryError, match="not bound"):
            directory.bulk_load([good[1], bad])  # all or nothing
        assert directory.count() == 2
        assert directory.lookup(email="eve@op1.test").entries == ()
