"""``caducee demo`` runs end to end and shows each step."""

from __future__ import annotations

import pathlib

from click.testing import CliRunner

from caducee.cli.main import cli
from tests.conftest import run


def test_demo_runs_and_writes_only_ciphertext(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    for needle in ("signed by", "attachment: results.pdf", "refused:", "Demo complete"):
        assert needle in result.output
    wire = (out / "message.eml").read_bytes()
    assert b"Subject: [...]" in wire and b"smime.p7m" in wire
    assert b"blood test" not in wire


def test_demo_message_is_plain_smime_for_openssl(tmp_path: pathlib.Path, openssl: str) -> None:
    out = tmp_path / "demo"
    CliRunner().invoke(cli, ["demo", "--out-dir", str(out)])
    printed = run([openssl, "cms", "-cmsout", "-print", "-in", str(out / "message.eml")])
    assert b"id-smime-ct-authEnvelopedData" in printed or b"authEnvelopedData" in printed
