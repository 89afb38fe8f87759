"""``caducee demo`` runs the main job end to end: every step shows what it must, nothing leaks.

The demo itself is the peer here: real CAs, directories, SMTP over loopback, Maildirs, the agent,
SoftHSM2 cards in the subprocess test; ``openssl cms`` judges the wire message independently.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from rich.console import Console

from caducee.cli.main import cli
from caducee.demo import letter, scenario
from caducee.demo.scenario import run_demo
from caducee.demo.wire import envelope_summary
from caducee.keys.pkcs11 import SOFTHSM2_MODULE
from tests.conftest import run

#: what each step must show (on whitespace-normalised output: rich wraps long lines)
STEPS = (
    "signed by Dr Martin <dr-martin@op1.test>, identity checked by Operator 1 Health CA; encrypted",
    "Subject: [...]",
    "content encrypted with AES-256-GCM",
    "= Dr Cardiologist's encryption cert",
    f"attachment: {letter.ATTACHMENT_NAME} (application/pdf,",
    "signed read receipt 'displayed' sent to dr-martin@op1.test",
    "cardiologist@op2.test: displayed",
    "dr-petit@op1.test: sent",
    f"her sent copy opens with her own encryption key: '{letter.SUBJECT}'",
    "refused before anything left: not sent: no valid encryption certificate for"
    " dr-unknown@op2.test: no certificate in the directories",
    "nothing was submitted",
    "flagged, not trusted: COULD NOT BE OPENED:",
    "flagged, not trusted: SIGNATURE BROKEN:",
    "temp dir removed",
    "Demo complete",
)


def _flat(text: str) -> str:
    return " ".join(text.split())


@dataclasses.dataclass(frozen=True)
class DemoRun:
    output: str  # whitespace-normalised
    out_dir: pathlib.Path
    tmp: pathlib.Path  # TMPDIR the demo used

    @property
    def wire(self) -> bytes:
        return (self.out_dir / "message.eml").read_bytes()

    def encryption_serials(self) -> set[int]:
        return {int(s, 16) for s in re.findall(r"encryption cert ([0-9a-f]{8,})\b", self.output)}


@pytest.fixture(scope="module")
def software_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    base = tmp_path_factory.mktemp("demo-sw")
    tmp = base / "tmp"
    tmp.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(tmp))
        result = CliRunner().invoke(
            cli, ["demo", "--software-keys", "--out-dir", str(base / "out")]
        )
    assert result.exit_code == 0, result.output
    yield DemoRun(_flat(result.output), base / "out", tmp)


def test_every_step_shows_its_outcome(software_run: DemoRun) -> None:
    assert "keys: SOFTWARE keys in memory (--software-keys)" in software_run.output
    for needle in STEPS:
        assert needle in software_run.output, needle
    assert software_run.output.index("signed by Dr Martin") < software_run.output.index(
        "cardiologist@op2.test: displayed"
    )


def test_everything_temporary_is_removed(software_run: DemoRun) -> None:
    assert list(software_run.tmp.iterdir()) == []
    assert [p.name for p in software_run.out_dir.iterdir()] == ["message.eml"]


def test_wire_message_holds_no_plaintext(software_run: DemoRun) -> None:
    wire = software_run.wire
    assert b"Subject: [...]" in wire and b"smime.p7m" in wire
    for phrase in letter.SECRET_PHRASES:
        assert phrase.encode() not in wire
    assert letter.lab_result_pdf().data not in wire


def test_wire_message_is_for_the_recipients_only(
    software_run: DemoRun, openssl: str, tmp_path: pathlib.Path
) -> None:
    printed = run(
        [openssl, "cms", "-cmsout", "-print", "-in", str(software_run.out_dir / "message.eml")]
    )
    assert b"id-smime-ct-authEnvelopedData" in printed
    recipients = {int(s, 16) for s in re.findall(rb"serialNumber: 0x([0-9A-F]+)", printed)}
    # the cardiologist, Dr Petit, and Dr Martin's own sent copy: nobody else
    assert recipients == software_run.encryption_serials()
    assert len(recipients) == 3
    cert, key = tmp_path / "other.pem", tmp_path / "other.key"
    outsider = ["-newkey", "rsa:2048", "-nodes", "-subj", "/CN=outsider", "-days", "1"]
    run([openssl, "req", "-x509", *outsider, "-keyout", str(key), "-out", str(cert)])
    wire = software_run.out_dir / "message.eml"
    proc = subprocess.run(
        [openssl, "cms", "-decrypt", "-in", str(wire), "-recip", str(cert), "-inkey", str(key)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert b"exertional" not in proc.stdout


def test_no_plaintext_on_disk_while_it_runs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file the demo writes (stores, Maildirs, directories, CAs) is scanned before removal;
    this run also takes the path of a machine without SoftHSM2."""
    monkeypatch.setattr(scenario, "softhsm_available", lambda: False)
    scanned: list[pathlib.Path] = []
    secrets = [p.encode() for p in letter.SECRET_PHRASES] + [letter.lab_result_pdf().data]

    def scan(root: pathlib.Path) -> None:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned.append(path)
                for secret in secrets:
                    assert secret not in data, f"plaintext in {path.relative_to(root)}"

    console = Console(file=io.StringIO(), width=200)
    run_demo(console, tmp_path / "out", before_cleanup=scan)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"keys: SOFTWARE keys in memory (SoftHSM2 not installed ({SOFTHSM2_MODULE}))" in output
    assert "Demo complete" in output
    names = {p.name for p in scanned}
    assert "messages.sqlite" in names  # the agents' stores were among them
    assert any(p.parent.name in ("new", "cur") for p in scanned)  # and the Maildirs


@pytest.mark.softhsm
def test_demo_with_softhsm_cards_as_a_real_command(tmp_path: pathlib.Path) -> None:
    if not os.path.exists(SOFTHSM2_MODULE):
        pytest.skip(f"SoftHSM2 is not installed ({SOFTHSM2_MODULE} missing)")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), COLUMNS="200")
    env.pop("SOFTHSM2_CONF", None)
    script = pathlib.Path(sys.executable).parent / "caducee"
    proc = subprocess.run(
        [str(script), "demo"], cwd=tmp_path, env=env, capture_output=True, timeout=240
    )
    output = _flat(proc.stdout.decode())
    assert proc.returncode == 0, output + proc.stderr.decode()
    assert "keys: SoftHSM2 cards" in output
    assert "card 'dr-martin'" in output and "card 'cardiology'" in output
    assert "decrypted with the cardiologist's encryption key (1 card operation)" in output
    for needle in STEPS:
        assert needle in output, needle
    assert list(tmp.iterdir()) == []  # tokens, keys, stores: all gone
    wire = (tmp_path / "demo-out" / "message.eml").read_bytes()  # the default --out-dir
    for phrase in letter.SECRET_PHRASES:
        assert phrase.encode() not in wire


def test_envelope_summary_of_something_else_says_nothing() -> None:
    assert envelope_summary(b"Subject: hi\r\n\r\nnot base64 CMS\r\n", {}) == []
    assert envelope_summary(b"no body at all", {}) == []
