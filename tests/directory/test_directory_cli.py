"""``caducee directory``: CliRunner for the commands, one real ``serve`` process on loopback."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from caducee.cli.directory import group
from caducee.directory.api import (
    DirectoryUnavailableError,
    EntryNotFoundError,
    InvalidEntryError,
)
from caducee.directory.http import HttpDirectory
from caducee.directory.slapd import free_port
from caducee.errors import UsageError
from caducee.serials import format_serial


@pytest.fixture
def certs(tmp_path: pathlib.Path, pki) -> dict[str, str]:
    out = {}
    pem = serialization.Encoding.PEM
    for name, cert, encoding in [
        ("sig.pem", pki.alice.signing.certificate, pem),
        ("enc.der", pki.alice.encryption.certificate, serialization.Encoding.DER),
        ("bob.pem", pki.bob.encryption.certificate, pem),
        ("ca.pem", pki.ca.certificate, pem),
    ]:
        (tmp_path / name).write_bytes(cert.public_bytes(encoding))
        out[name] = str(tmp_path / name)
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    out["junk.pem"] = str(tmp_path / "junk.pem")
    return out


def invoke(args: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(group, args, env=env, catch_exceptions=True)


def test_publish_lookup_withdraw(tmp_path: pathlib.Path, certs: dict[str, str], pki) -> None:
    url = f"sqlite://{tmp_path / 'dir.sqlite'}"
    result = invoke(
        [
            "publish",
            "-d",
            url,
            certs["sig.pem"],
            certs["enc.der"],
            "--professional-id",
            "10001234567",
            "--profession",
            "Pédiatre",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "published 2 certificate(s) for alice@op1.test" in result.output

    result = invoke(["lookup", "-d", url, "--professional-id", "10001234567"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("alice@op1.test  alice  Pédiatre")
    assert lines[1].split()[:3] == [
        "signature",
        "serial",
        format_serial(pki.alice.signing.certificate.serial_number),
    ]
    assert lines[2].split()[0] == "encryption"

    save = tmp_path / "saved"
    result = invoke(["lookup", "-d", url, "-e", "alice@op1.test", "--json", "--save", str(save)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [c["usage"] for c in data["entries"][0]["certificates"]] == [
        ["signature"],
        ["encryption"],
    ]
    assert len(list(save.glob("alice@op1.test-*.pem"))) == 2

    result = invoke(["withdraw", "-d", url, certs["sig.pem"]])
    assert result.exit_code == 0 and "withdrew 1 certificate(s)" in result.output
    result = invoke(
        ["withdraw", "-d", url, "--serial", f"{pki.alice.encryption.certificate.serial_number:X}"]
    )
    assert result.exit_code == 0, result.output
    result = invoke(["lookup", "-d", url, "-e", "alice@op1.test"])
    assert isinstance(result.exception, EntryNotFoundError)
    assert "no directory entry matches email=alice@op1.test" in str(result.exception)


def test_default_directory_follows_caducee_home(
    tmp_path: pathlib.Path, certs: dict[str, str]
) -> None:
    env = {"CADUCEE_HOME": str(tmp_path / "home"), "CADUCEE_DIRECTORY": ""}
    assert invoke(["publish", certs["bob.pem"]], env=env).exit_code == 0
    assert (tmp_path / "home" / "directory.sqlite").exists()
    result = invoke(["lookup", "-n", "bob"], env=env)
    assert result.exit_code == 0 and result.output.startswith("bob@op2.test")


@pytest.mark.parametrize(
    "args, error, message",
    [
        (["publish", "@ca.pem"], InvalidEntryError, "CA certificate"),
        (["publish", "@junk.pem"], UsageError, "not a PEM or DER certificate"),
        (["publish", "@missing"], UsageError, "cannot read"),
        (["publish", "@bob.pem", "--professional-id", "12"], InvalidEntryError, "11 digits"),
        (["publish", "@bob.pem", "--email", "alice@op1.test"], InvalidEntryError, "not bound"),
        (["withdraw"], UsageError, "exactly one"),
        (["withdraw", "--serial", "xyz"], UsageError, "hexadecimal"),
        (["withdraw", "--email", "x@op1.test"], DirectoryUnavailableError, "no directory database"),
        (["lookup"], UsageError, "needs an e-mail"),
    ],
)
def test_user_errors_are_caducee_errors(
    tmp_path: pathlib.Path, certs: dict[str, str], args: list[str], error: type, message: str
) -> None:
    certs = certs | {"missing": str(tmp_path / "missing.pem")}
    url = f"sqlite://{tmp_path / 'dir.sqlite'}"
    args = [certs[a[1:]] if a.startswith("@") else a for a in args]
    result = invoke([args[0], "-d", url, *args[1:]])
    assert isinstance(result.exception, error), result.output
    assert message in str(result.exception)


def wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("caducee directory serve did not answer")


def test_serve_in_a_real_process(tmp_path: pathlib.Path, certs: dict[str, str], pki) -> None:
    db = tmp_path / "served.sqlite"
    assert invoke(["publish", "-d", f"sqlite://{db}", certs["bob.pem"]]).exit_code == 0
    token = tmp_path / "token"
    token.write_text("op-token\n")
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    cmd = [
        sys.executable,
        "-m",
        "caducee.cli.main",
        "directory",
        "serve",
        "-d",
        f"sqlite://{db}",
        "--port",
        str(port),
        "--admin-token-file",
        str(token),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url, proc)
        (entry,) = HttpDirectory(url).lookup(name="bob").entries
        assert entry.encryption_certificates == (pki.bob.encryption.certificate,)
        HttpDirectory(url, token="op-token").publish(pki.alice.signing.certificate)
        # the command line against the served directory, with its one-line errors
        ok = subprocess.run(
            [
                sys.executable,
                "-m",
                "caducee.cli.main",
                "directory",
                "lookup",
                "-d",
                url,
                "-e",
                "alice@op1.test",
            ],
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.decode().startswith("alice@op1.test")
        missing = subprocess.run(
            [
                sys.executable,
                "-m",
                "caducee.cli.main",
                "directory",
                "lookup",
                "-d",
                url,
                "-e",
                "zed@op1.test",
            ],
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert missing.returncode == 6
        assert missing.stderr.decode() == (
            "caducee: error: no directory entry matches email=zed@op1.test\n"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_lookup_across_operators_from_a_config_file(
    tmp_path: pathlib.Path, certs: dict[str, str]
) -> None:
    for name, cert in (("op1", "sig.pem"), ("op2", "bob.pem")):
        assert (
            invoke(["publish", "-d", f"sqlite://{tmp_path / name}.sqlite", certs[cert]]).exit_code
            == 0
        )
    conf = tmp_path / "caducee.toml"
    conf.write_text(
        "[directory]\ntimeout = 2\n"
        '[[directory.operators]]\nname = "op1"\nurl = "op1.sqlite"\n'
        '[[directory.operators]]\nname = "op2"\nurl = "op2.sqlite"\n'
    )
    result = invoke(["lookup", "--config", str(conf), "-e", "bob@op2.test"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith("(from op2)")
    result = invoke(["lookup", "--config", str(conf), "-d", "x", "-e", "bob@op2.test"])
    assert isinstance(result.exception, UsageError)
