"""The configuration file refuses what it does not understand (defects #8 and #9 of 2026-11-29).

A misspelt key (``allow_plaintxt = false``) must not silently leave the default in force, and a
file that is not UTF-8 must give a one-line configuration error naming the file.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from caducee.config import load_config
from caducee.errors import ConfigError

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "messaging.md"

BASE = """\
data_dir = "data"
address_book = []

[identity]
email = "martin@op1.test"
signing_key = "sign.key"
signing_cert = "sign.crt"
decryption_key = "enc.key"
decryption_cert = "enc.crt"

[trust]
anchors = ["op1-ca.pem"]

[policy]
allow_plaintext = true

[smtp]
host = "smtp.op1.test"

[[imap]]
name = "work"
host = "imap.op1.test"

[[maildir]]
name = "local"
path = "Maildir"

[directory]
ttl = 300
[[directory.operators]]
name = "op1"
url = "ldaps://annuaire.op1.test/o=op1"
"""


def _write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_base_configuration_loads(tmp_path: pathlib.Path) -> None:
    config = load_config(_write(tmp_path, BASE))
    assert config.policy.allow_plaintext
    assert config.directory["ttl"] == 300


def test_the_documented_example_loads(tmp_path: pathlib.Path) -> None:
    """Every key docs/messaging.md shows is a key the loader knows."""
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block is not None
    config = load_config(_write(tmp_path, block.group(1)))
    assert config.identity.card is not None
    assert [s.name for s in config.sources] == ["work", "local"]


@pytest.mark.parametrize(
    ("old", "new", "section", "hint"),
    [
        ("allow_plaintext = true", "allow_plaintxt = false", "[policy]", "allow_plaintext"),
        ('data_dir = "data"', 'data_dri = "data"', "", "data_dir"),
        ('signing_cert = "sign.crt"', 'signing_crt = "sign.crt"', "[identity]", "signing_cert"),
        ('anchors = ["op1-ca.pem"]', 'anchor = ["op1-ca.pem"]', "[trust]", "anchors"),
        ('host = "smtp.op1.test"', 'hots = "smtp.op1.test"', "[smtp]", "host"),
        ('host = "imap.op1.test"', 'host = "imap.op1.test"\nmailbx = "X"', "[imap] #1", "mailbox"),
        ('path = "Maildir"', 'pth = "Maildir"', "[maildir] #1", "path"),
        ("ttl = 300", "tll = 300", "[directory]", "ttl"),
        ('url = "ldaps:', 'ulr = "ldaps:', "[directory] [operators] #1", "url"),
    ],
)
def test_unknown_keys_are_refused_with_a_suggestion(
    tmp_path: pathlib.Path, old: str, new: str, section: str, hint: str
) -> None:
    assert old in BASE
    path = _write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    bad = new.split("\n")[-1].split(" =")[0]
    assert message.startswith(f"{path.resolve()}{' ' + section if section else ''}: ")
    assert f"unknown key '{bad}'" in message
    assert f"did you mean '{hint}'?" in message


def test_an_unknown_section_lists_the_known_ones(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, BASE + "\n[garbage]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'garbage' \(known keys: address_book, "):
        load_config(path)


def test_a_configuration_that_is_not_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(BASE.replace("martin", "m\xe9decin").encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: not UTF-8 text (byte 0xe9 on line 5); save it as UTF-8")


def _cli_error(path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    from caducee.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["inbox", "--config", str(path)])
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


def test_the_cli_says_it_in_one_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(BASE.replace("allow_plaintext = true", "allow_plaintxt = false").encode())
    assert _cli_error(path, capsys) == [
        f"caducee: error: {path} [policy]: unknown key 'allow_plaintxt' "
        "(did you mean 'allow_plaintext'?)"
    ]
    path.write_bytes(BASE.encode("utf-16"))
    assert _cli_error(path, capsys) == [
        f"caducee: error: {path}: not UTF-8 text (byte 0xff on line 1); save it as UTF-8"
    ]
