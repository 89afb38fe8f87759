"""Defects found by the acceptance review of the mail commands (#5, #7, #10, #12, #9 CLI side).

Each test runs the real ``caducee`` command in a subprocess against a real setup: the embedded
SMTP service delivering into Maildirs, software-key identities of two operators, and the
message store. The service is stopped once the messages are in, so "server down" is real too.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import socket
from collections.abc import Iterator

import pytest

from tests.agent.conftest import Operators, ops  # noqa: F401  (ops: the session fixture)
from tests.agent.test_cli_mail import _setup, caducee, caducee_tty

embedded = pytest.importorskip("caducee.mail.embedded", reason="embedded mail service missing")

MARKUP_SUBJECT = "[bold red]URGENT[/] click"
PLAIN_MARKUP = (
    "From: Spam <spam@evil.test>\r\nTo: cardio@op2.test\r\n"
    f"Subject: {MARKUP_SUBJECT}\r\nDate: Sun, 29 Nov 2026 08:00:00 +0000\r\n\r\nhello\r\n"
).encode()
#: not a message at all: its "header" is binary, so the error names raw bytes
GARBAGE = b"\x00\x01\x02 just binary\r\n\r\n\xff\xfe"
#: headers, then a CMS body cut short: stored as FAILED, with outer headers to show
TRUNCATED = (
    b"From: x@op1.test\r\nTo: cardio@op2.test\r\nSubject: bad smime\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nMIIBnAYJKoZIhvcNAQcDoIIBjTCCAYkCAQIx\r\n"
)
WIDE = {"COLUMNS": "250"}


@dataclasses.dataclass(frozen=True)
class World:
    martin: pathlib.Path  # configuration files
    cardio: pathlib.Path
    ids: dict[str, int]  # received message ids in cardio's store, by kind
    base: pathlib.Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def world(ops: Operators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:  # noqa: F811
    base = tmp_path_factory.mktemp("acceptance")
    service = embedded.EmbeddedMailService(base / "mail", ["op1.test", "op2.test"])
    with service:
        martin = _setup(base, ops.martin, ops, service.port, service.maildir("martin@op1.test"))
        cardio = _setup(base, ops.cardio, ops, service.port, service.maildir("cardio@op2.test"))
        sent = caducee(
            "send", "--config", str(martin), "--to", "cardio@op2.test", "--subject", "Bilan",
            "--no-receipt", "--json", stdin="Compte rendu.\n",
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        for data in (PLAIN_MARKUP, GARBAGE, TRUNCATED):
            service.file(["cardio@op2.test"], data)
        fetched = caducee("fetch", "--config", str(cardio), "--json")
        assert fetched.returncode == 0, fetched.stderr
    rows = json.loads(caducee("inbox", "--config", str(cardio), "--json").stdout)
    ids = {
        "encrypted": next(r["id"] for r in rows if r["encrypted"] and r["status"] == "signed"),
        "markup": next(r["id"] for r in rows if r["subject"] == MARKUP_SUBJECT),
        "garbage": next(r["id"] for r in rows if r["status"] == "FAILED" and not r["subject"]),
        "truncated": next(r["id"] for r in rows if r["subject"] == "bad smime"),
    }
    yield World(martin, cardio, ids, base)


def _one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    return text


# -- #5: the inbox prints text as is ------------------------------------------------------------


def test_inbox_prints_subjects_and_placeholder_as_is(world: World) -> None:
    shown = caducee("inbox", "--config", str(world.cardio), env=WIDE)
    assert shown.returncode == 0, shown.stderr
    lines = {int(m.group(1)): line for line in shown.stdout.splitlines()
             if (m := re.match(r"\W*(\d+)\s", line))}  # fmt: skip
    assert "[encrypted]" in lines[world.ids["encrypted"]]
    assert MARKUP_SUBJECT in lines[world.ids["markup"]]
    assert "<spam@evil.test>" in lines[world.ids["markup"]]


# -- #7: --allow-plaintext says what it does ------------------------------------------------------


def test_allow_plaintext_help_says_everyone_gets_it_in_clear() -> None:
    shown = caducee("send", "--help", env=WIDE)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "NOT ENCRYPTED, to every recipient" in text
    assert "to recipients without a valid certificate" not in text


def test_every_send_and_init_option_has_help() -> None:
    from caducee.cli.init import init
    from caducee.cli.mail import send

    for command in (send, init):
        for param in command.params:
            if isinstance(param, __import__("click").Option):
                assert param.help, f"{command.name} {param.opts[0]} has no help"


# -- #10: init checks what it writes -------------------------------------------------------------


def _init_args(world: World, person: str, **override: str) -> list[str]:
    home = world.base / person
    args = {
        "--email": person,
        "--signing-key": str(home / "sign.key"),
        "--signing-cert": str(home / "sign.crt"),
        "--decryption-key": str(home / "enc.key"),
        "--decryption-cert": str(home / "enc.crt"),
        "--anchor": str(home / "anchors.pem"),
        "--data-dir": str(world.base / "init-data"),
        **override,
    }
    return [x for k, v in args.items() if v for x in (k, v)]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"--decryption-key": "sign.key"}, "does not belong to the certificate"),
        ({"--email": "someone.else@op2.test"}, "not someone.else@op2.test"),
        ({"--anchor": "enc.key"}, "no readable certificate"),
        ({"--signing-key": ""}, "both --signing-key"),
    ],
)
def test_init_refuses_what_would_fail_later(
    world: World, tmp_path: pathlib.Path, override: dict[str, str], expected: str
) -> None:
    home = world.base / "cardio@op2.test"
    fixed = {k: (str(home / v) if v.endswith((".key", ".crt")) else v) for k, v in override.items()}
    args = _init_args(world, "cardio@op2.test", **fixed)
    config = tmp_path / "config.toml"
    done = caducee("init", "-y", "--config", str(config), *args)
    assert done.returncode == 2, done.stderr
    assert expected in _one_line(done.stderr)
    assert not config.exists()
    # the same files, consistent, are accepted
    good = caducee("init", "-y", "--config", str(config),
                   *_init_args(world, "cardio@op2.test"))  # fmt: skip
    assert good.returncode == 0, good.stderr


def test_init_writes_intermediates(world: World, tmp_path: pathlib.Path) -> None:
    import tomllib

    home = world.base / "cardio@op2.test"
    config = tmp_path / "config.toml"
    args = _init_args(world, "cardio@op2.test")
    done = caducee("init", "-y", "--config", str(config), *args,
                   "--intermediate", str(home / "enc.crt"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    trust = tomllib.loads(config.read_text())["trust"]
    assert trust["intermediates"] == [str((home / "enc.crt").resolve())]
    bad = caducee("init", "-y", "--config", str(tmp_path / "bad.toml"), *args,
                  "--intermediate", str(home / "enc.key"))  # fmt: skip
    assert bad.returncode == 2 and "intermediate CA certificate" in _one_line(bad.stderr)


def test_init_takes_encrypted_keys_with_their_password_file(
    world: World, tmp_path: pathlib.Path
) -> None:
    """Encrypted key files are checked against their certificates like clear ones; the
    configuration names the password file, never the password; the agent opens them."""
    import tomllib

    from cryptography.hazmat.primitives import serialization

    home = world.base / "cardio@op2.test"
    sealed: dict[str, str] = {}
    for name in ("sign.key", "enc.key"):
        key = serialization.load_pem_private_key((home / name).read_bytes(), None)
        target = tmp_path / f"sealed-{name}"
        target.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"s3cret phrase"),
            )
        )
        sealed[name] = str(target)
    (tmp_path / "key.pw").write_text("s3cret phrase\n")
    (tmp_path / "wrong.pw").write_text("not it\n")
    args = _init_args(world, "cardio@op2.test", **{"--signing-key": sealed["sign.key"],
                      "--decryption-key": sealed["enc.key"]})  # fmt: skip
    config = tmp_path / "config.toml"
    missing = caducee("init", "-y", "--config", str(config), *args)
    assert missing.returncode == 2 and "is encrypted: give --key-password-file" in missing.stderr
    wrong = caducee("init", "-y", "--config", str(config), *args,
                    "--key-password-file", str(tmp_path / "wrong.pw"))  # fmt: skip
    assert wrong.returncode == 2 and "wrong password" in _one_line(wrong.stderr)
    assert not config.exists()
    swapped = _init_args(world, "cardio@op2.test", **{"--signing-key": sealed["enc.key"],
                         "--decryption-key": sealed["sign.key"]})  # fmt: skip
    crossed = caducee("init", "-y", "--config", str(config), *swapped,
                      "--key-password-file", str(tmp_path / "key.pw"))  # fmt: skip
    assert crossed.returncode == 2 and "does not belong to the certificate" in crossed.stderr
    done = caducee("init", "-y", "--config", str(config), *args,
                   "--key-password-file", str(tmp_path / "key.pw"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = config.read_text()
    assert "s3cret" not in text
    identity = tomllib.loads(text)["identity"]
    assert identity["key_password_file"] == str((tmp_path / "key.pw").resolve())
    from caducee.agent_setup import open_agent
    from caducee.config import load_config

    with open_agent(load_config(config)) as session:
        assert session.agent.identity.signing_key is not None


def test_init_refuses_card_uri_with_module_path_in_the_path(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "config.toml"
    done = caducee("init", "-y", "--config", str(config), "--email", "a@op1.test",
                   "--card", "pkcs11:token=X;module-path=/usr/lib/softhsm/libsofthsm2.so",
                   "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert done.returncode == 2
    assert "?module-path=" in _one_line(done.stderr)
    assert not config.exists()


def test_docs_card_uri_examples_put_the_module_after_the_question_mark() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        assert not re.search(r"pkcs11:[^\s`'\"]*;module-(path|name)=", text), doc


def _caducee_pty(args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run caducee on a terminal (interactive prompts), typing ``answers`` line by line."""
    return caducee_tty(*args, answers=answers)


def test_interactive_init_refuses_a_missing_key_file(world: World, tmp_path: pathlib.Path) -> None:
    home = world.base / "cardio@op2.test"
    config = tmp_path / "config.toml"
    code, screen = _caducee_pty(
        ["init", "--config", str(config), "--data-dir", str(tmp_path / "d")],
        ["cardio@op2.test", "Cardio", "", str(tmp_path / "no-such.key"),
         str(home / "sign.crt"), str(home / "enc.key"), str(home / "enc.crt"),
         "", "", "", ""],
    )  # fmt: skip
    assert code == 2, screen
    assert "no-such.key: no such file" in screen
    assert not config.exists()


# -- #12: --json failures, read of a FAILED message, queued send, agent --once, export ------------


def test_json_failures_are_json_on_stdout(world: World, tmp_path: pathlib.Path) -> None:
    missing = caducee("inbox", "--json", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2
    error = json.loads(missing.stdout)
    assert error["exit_code"] == 2 and "caducee init" in error["error"]
    assert error["error"] in _one_line(missing.stderr)
    bad_option = caducee("outbox", "--json", "--bogus", "--config", str(world.cardio))
    assert bad_option.returncode == 2
    assert json.loads(bad_option.stdout)["exit_code"] == 2
    nothing = caducee("read", "9999", "--json", "--config", str(world.cardio))
    assert nothing.returncode == 9
    assert json.loads(nothing.stdout)["exit_code"] == 9


def test_read_unknown_message_is_a_store_error(world: World) -> None:
    nothing = caducee("read", "9999", "--config", str(world.cardio))
    assert nothing.returncode == 9
    assert "no message 9999" in _one_line(nothing.stderr)


def test_unknown_message_is_said_without_the_card(world: World, tmp_path: pathlib.Path) -> None:
    """The card is not in the reader: asking for a message that does not exist still says so
    (exit 9), rather than asking for the card (exit 5)."""
    text = world.cardio.read_text()
    text = re.sub(r"(?m)^(signing|decryption)_(key|cert) = .*\n", "", text)
    card = "pkcs11:token=absent-card?module-path=/usr/lib/softhsm/libsofthsm2.so"
    text = text.replace("[identity]\n", f'[identity]\ncard = "{card}"\n')
    config = tmp_path / "card.toml"
    config.write_text(text)
    for command in (["read", "9999"], ["export", "9999", "--attachments", str(tmp_path / "o")]):
        done = caducee(*command, "--config", str(config))
        assert done.returncode == 9, done.stderr
        assert "no message 9999" in _one_line(done.stderr)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_read_of_a_failed_message_says_why_without_bytes(world: World, kind: str) -> None:
    message = str(world.ids[kind])
    shown = caducee("read", message, "--no-receipt", "--config", str(world.cardio))
    assert shown.returncode == 3
    assert shown.stdout.startswith("COULD NOT BE OPENED: malformed input")
    assert "\\x" not in shown.stdout + shown.stderr and "b'" not in shown.stdout + shown.stderr
    _one_line(shown.stderr)
    if kind == "truncated":
        assert "From: x@op1.test" in shown.stdout and "Subject: bad smime" in shown.stdout
    as_json = caducee("read", message, "--json", "--config", str(world.cardio))
    assert as_json.returncode == 3
    data = json.loads(as_json.stdout)
    assert data["exit_code"] == 3 and "COULD NOT BE OPENED" in data["error"]
    exported = caducee("export", message, "--attachments", str(world.base / "x"),
                       "--config", str(world.cardio))  # fmt: skip
    assert exported.returncode == 3 and "b'" not in exported.stderr


def test_export_without_attachments_says_so(world: World, tmp_path: pathlib.Path) -> None:
    done = caducee("export", str(world.ids["encrypted"]), "--attachments", str(tmp_path / "out"),
                   "--config", str(world.cardio))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no attachments" in done.stdout


def test_send_while_the_server_is_down_says_queued_and_why(world: World) -> None:
    queued = caducee("send", "--config", str(world.martin), "--to", "cardio@op2.test",
                     "--subject", "later", "--no-receipt", stdin="x")  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    line = _one_line(queued.stdout)
    assert "queued in the outbox" in line
    assert "connection refused" in line and "127.0.0.1:" in line


def test_subject_with_a_line_break_is_a_usage_error(world: World) -> None:
    for subject in ("Hi\nX-Injected: yes", "Hi\rX: y"):
        done = caducee("send", "--config", str(world.martin), "--to", "cardio@op2.test",
                       "--subject", subject, stdin="x")  # fmt: skip
        assert done.returncode == 2
        assert "--subject must be one line" in _one_line(done.stderr)  # names the option


def test_agent_once_with_the_imap_server_down_fails(world: World, tmp_path: pathlib.Path) -> None:
    home = world.base / "martin@op1.test"
    secret = tmp_path / "imap-password"
    secret.write_text("pw\n")
    config = tmp_path / "config.toml"
    done = caducee("init", "-y", "--config", str(config),
                   *_init_args(world, "martin@op1.test"),
                   "--anchor", str(home / "anchors.pem"),
                   "--imap-host", "127.0.0.1", "--imap-port", str(_free_port()),
                   "--imap-security", "none", "--imap-user", "martin",
                   "--imap-password-file", str(secret),
                   "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    loop = caducee("agent", "--once", "--config", str(config))
    assert loop.returncode == 7, loop.stderr
    last = loop.stderr.strip().splitlines()[-1]
    assert last.startswith("caducee: error: IMAP 127.0.0.1:") and "connection refused" in last
