"""The mail commands end to end over the embedded SMTP service and Maildirs (real transport)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import tomllib

import pytest
from cryptography.hazmat.primitives import serialization

from caducee.config import dump_toml, load_config, parse_config
from caducee.errors import ConfigError

from .conftest import EPOCH, Operators, Person

embedded = pytest.importorskip("caducee.mail.embedded", reason="embedded mail service missing")


def _pem_key(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined,no-any-return]


def caducee(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from caducee.cli.main import main; main()", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def caducee_tty(*args: str, answers: list[str] | None = None) -> tuple[int, str]:
    """Run caducee with a pseudo-terminal as stdout and stderr (progress bars are shown); with
    ``answers``, as stdin too, typing them line by line at its prompts."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from caducee.cli.main import main; main()", *args],
        stdin=subprocess.DEVNULL if answers is None else slave,
        stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    if answers is not None:
        os.write(master, "".join(a + "\n" for a in answers).encode())
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def _setup(
    base: pathlib.Path, person: Person, ops: Operators, port: int, maildir: pathlib.Path
) -> pathlib.Path:
    home = base / person.email
    home.mkdir(parents=True)
    for name, data in {
        "sign.key": _pem_key(person.private_keys[0]),
        "sign.crt": _pem(person.signing.certificate),
        "enc.key": _pem_key(person.private_keys[1]),
        "enc.crt": _pem(person.encryption.certificate),
        "anchors.pem": _pem(ops.op1.certificate) + _pem(ops.op2.certificate),
        "op1.crl": ops.op1.crl(now=EPOCH).public_bytes(serialization.Encoding.PEM),
        "op2.crl": ops.op2.crl(now=EPOCH).public_bytes(serialization.Encoding.PEM),
        "book.pem": b"".join(
            _pem(p.encryption.certificate) for p in (ops.martin, ops.cardio, ops.petit)
        ),
    }.items():
        (home / name).write_bytes(data)
    config = home / "config.toml"
    done = caducee(
        "init",
        "--config",
        str(config),
        "--non-interactive",
        "--email",
        person.email,
        "--signing-key",
        str(home / "sign.key"),
        "--signing-cert",
        str(home / "sign.crt"),
        "--decryption-key",
        str(home / "enc.key"),
        "--decryption-cert",
        str(home / "enc.crt"),
        "--anchor",
        str(home / "anchors.pem"),
        "--crl",
        str(home / "op1.crl"),
        "--crl",
        str(home / "op2.crl"),
        "--no-fetch-crls",
        "--address-book",
        str(home / "book.pem"),
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        str(port),
        "--smtp-security",
        "none",
        "--maildir",
        str(maildir),
        "--data-dir",
        str(home / "data"),
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    return config


def test_cli_send_fetch_inbox_read_export(ops: Operators, tmp_path: pathlib.Path):
    service = embedded.EmbeddedMailService(tmp_path / "mail", ["op1.test", "op2.test"])
    with service:
        martin = _setup(tmp_path, ops.martin, ops, service.port, service.maildir("martin@op1.test"))
        cardio = _setup(tmp_path, ops.cardio, ops, service.port, service.maildir("cardio@op2.test"))
        report = tmp_path / "bilan.pdf"
        report.write_bytes(b"%PDF-1.4 lab result")
        sent = caducee(
            "send",
            "--config",
            str(martin),
            "--to",
            "cardio@op2.test",
            "--subject",
            "Bilan",
            "--attach",
            str(report),
            "--json",
            stdin="Compte rendu ci-joint.\n",
        )
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["state"] == "sent"

        refused = caducee(
            "send", "--config", str(martin), "--to", "unknown@op2.test", "--subject", "x", stdin="x"
        )
        assert refused.returncode == 8
        assert refused.stderr.count("\n") == 1 and "unknown@op2.test" in refused.stderr
        assert "Traceback" not in refused.stderr

        fetched = caducee("fetch", "--config", str(cardio), "--json")
        assert fetched.returncode == 0, fetched.stderr
        assert json.loads(fetched.stdout)["valid"] == 1
        assert json.loads(fetched.stdout)["receipts_due"] == 0
        listing = json.loads(caducee("inbox", "--config", str(cardio), "--json").stdout)
        (row,) = listing
        assert row["subject"] == "[encrypted]" and row["status"] == "signed"
        shown = caducee("read", str(row["id"]), "--config", str(cardio))
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("signed by Alice Martin <martin@op1.test>")
        assert "Compte rendu ci-joint." in shown.stdout and "bilan.pdf" in shown.stdout
        out = tmp_path / "export"
        exported = caducee(
            "export", str(row["id"]), "--attachments", str(out), "--config", str(cardio), "--json"
        )
        assert exported.returncode == 0, exported.stderr
        assert (out / "bilan.pdf").read_bytes() == b"%PDF-1.4 lab result"
        # on a terminal the export shows a progress bar, and writes the same files
        code, screen = caducee_tty(
            "export",
            str(row["id"]),
            "--attachments",
            str(tmp_path / "tty"),
            "--config",
            str(cardio),
        )
        assert code == 0, screen
        assert (tmp_path / "tty" / "bilan.pdf").read_bytes() == b"%PDF-1.4 lab result"

        # the read receipt travels back; Dr Martin's agent loop picks it up
        loop = caducee("agent", "--config", str(martin), "--once")
        assert loop.returncode == 0, loop.stderr
        sent_rows = json.loads(caducee("inbox", "--sent", "--config", str(martin), "--json").stdout)
        assert sent_rows[0]["recipients"] == {"cardio@op2.test": "displayed"}

    # server gone: the message waits in the outbox, nothing lost
    queued = caducee(
        "send",
        "--config",
        str(martin),
        "--to",
        "cardio@op2.test",
        "--subject",
        "later",
        "--json",
        stdin="x",
    )
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["state"] == "queued"
    waiting = json.loads(caducee("outbox", "--config", str(martin), "--json").stdout)
    assert len(waiting["waiting"]) == 1


def test_config_errors_are_one_line(tmp_path: pathlib.Path):
    missing = caducee("inbox", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "caducee init" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[identity]\nemail = "a@b.test"\n')
    out = caducee("inbox", "--config", str(bad))
    assert out.returncode == 2 and "give 'card'" in out.stderr
    with pytest.raises(ConfigError, match="security"):
        parse_config(
            {
                "identity": {"email": "a@b.test", "card": "pkcs11:token=x"},
                "smtp": {"host": "h", "security": "ssl3"},
            },
            tmp_path / "c.toml",
        )


def test_fetch_workers_auto_or_a_count(tmp_path: pathlib.Path):
    identity = {"email": "a@b.test", "card": "pkcs11:token=x"}
    where = tmp_path / "c.toml"
    assert parse_config({"identity": identity}, where).policy.fetch_workers is None
    auto = {"identity": identity, "policy": {"fetch_workers": "auto"}}
    assert parse_config(auto, where).policy.fetch_workers is None
    two = {"identity": identity, "policy": {"fetch_workers": 2}}
    assert parse_config(two, where).policy.fetch_workers == 2
    for bad in (-1, "many", True, 1.5):
        with pytest.raises(ConfigError, match="fetch_workers"):
            parse_config({"identity": identity, "policy": {"fetch_workers": bad}}, where)


def test_dump_toml_round_trips(tmp_path: pathlib.Path):
    data = {
        "data_dir": str(tmp_path / 'wé"ird\\path'),
        "identity": {"email": "a@b.test", "card": "pkcs11:token=Dr%20A;object=sign"},
        "policy": {"allow_plaintext": False, "poll_interval": 30},
        "imap": [{"name": "work", "host": "imap.op1.test", "port": 993, "security": "tls"}],
        "directory": {"operators": [{"name": "op1", "url": "ldaps://dir.op1.test/o=op1"}]},
    }
    assert tomllib.loads(dump_toml(data)) == data
    path = tmp_path / "config.toml"
    path.write_text(dump_toml(data))
    config = load_config(path)
    assert config.identity.card == "pkcs11:token=Dr%20A;object=sign"
    assert config.sources[0].server is not None and config.sources[0].server.port == 993
    assert config.policy.allow_plaintext is False


def test_agent_loop_stops_cleanly_on_sigterm(ops: Operators, tmp_path: pathlib.Path):
    service = embedded.EmbeddedMailService(tmp_path / "mail", ["op1.test", "op2.test"])
    with service:
        config = _setup(tmp_path, ops.petit, ops, service.port, service.maildir("petit@op1.test"))
        proc = subprocess.Popen(
            [sys.executable, "-c", "from caducee.cli.main import main; main()",
             "agent", "--config", str(config), "--interval", "3600"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # the first round is done: now it waits
            assert first.startswith("fetched 0"), first
            proc.send_signal(signal.SIGTERM)
            _, rest = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0
        assert "agent stopped" in rest and "Traceback" not in rest


def test_open_agent_takes_the_receipt_policy_from_the_configuration(
    ops: Operators, tmp_path: pathlib.Path
):
    """`[policy] request_mdn = false` applies to the Python API, not only to `caducee send`."""
    from caducee.agent_setup import open_agent
    from caducee.config import load_config

    config = _setup(tmp_path, ops.martin, ops, 9, tmp_path / "maildir")
    text = config.read_text()
    assert "[policy]" in text
    policy = "[policy]\nrequest_mdn = false\nmdn_on_fetch = true"
    config.write_text(text.replace("[policy]", policy))
    with open_agent(load_config(config), need_keys=False) as session:
        policy = session.agent.policy
    assert policy.request_mdn is False and policy.mdn_on_fetch is True


def test_an_unreadable_key_file_is_named(ops: Operators, tmp_path: pathlib.Path):
    from caducee.agent_setup import open_agent
    from caducee.config import load_config
    from caducee.errors import KeyStoreError

    config = _setup(tmp_path, ops.martin, ops, 9, tmp_path / "maildir")
    damaged = config.parent / "sign.key"
    damaged.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyStoreError) as caught:
        open_agent(load_config(config))
    assert str(caught.value) == (
        f"signing key {damaged}: cannot read the private key (wrong password, or not a PEM/DER key)"
    )
