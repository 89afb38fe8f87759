"""``caducee ca serve --renew-crls`` with CAs whose keys have different passphrases.

``ca serve`` runs as a subprocess on a free loopback port, in a session of its own (no
controlling terminal, stdin from /dev/null, no ``$CADUCEE_CA_PASS`` unless a test sets it), and
its CRLs are fetched over HTTP and checked with ``openssl crl``. Each CA's current CRL is removed
first, so the scheduler's first round must issue a new one with each CA's own key.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.cli.main import main
from caducee.pki import CAConfig, CertificateAuthority
from caducee.pki.ca import generate_ca_key

ROOT_PASS = "root passphrase, kept offline"
OP1_PASS = "operator one's passphrase"
CLI = [sys.executable, "-c", "from caducee.cli.main import main; main()"]


@dataclasses.dataclass
class Pair:
    base: pathlib.Path
    port: int
    root: pathlib.Path
    op1: pathlib.Path
    root_pass: pathlib.Path
    op1_pass: pathlib.Path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.crl"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _secret_file(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def pair(tmp_path: pathlib.Path) -> Pair:
    """A national root and an operator CA under it, each key under its own passphrase, their
    CRLs removed (so that a renewing server issues new ones at once)."""
    port = _port()
    base = f"http://127.0.0.1:{port}"
    root = CertificateAuthority.init_root(
        tmp_path / "root", CAConfig(name="National Health Root", crl_url=f"{base}/root.crl"),
        key=generate_ca_key("p256"), passphrase=ROOT_PASS.encode(),
    )  # fmt: skip
    op1 = CertificateAuthority.init_subordinate(
        tmp_path / "op1", CAConfig(name="Operator 1 CA", crl_url=f"{base}/op1.crl"), root,
        key=generate_ca_key("p256"), passphrase=OP1_PASS.encode(),
    )  # fmt: skip
    root.crl()  # number 1, as 'ca init' does
    op1.crl()
    for ca in ("root", "op1"):
        for name in ("crl.der", "crl.pem"):
            (tmp_path / ca / name).unlink(missing_ok=True)
    return Pair(
        tmp_path, port, tmp_path / "root", tmp_path / "op1",
        _secret_file(tmp_path / "root.pass", ROOT_PASS),
        _secret_file(tmp_path / "op1.pass", OP1_PASS),
    )  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return env | extra


def _serve(pair: Pair, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "ca", "serve", "--renew-crls", "--port", str(pair.port), *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env, start_new_session=True,  # no controlling terminal: never a prompt
    )  # fmt: skip


def _fetch_crls(pair: Pair, proc: subprocess.Popen[bytes], names: list[str]) -> dict[str, bytes]:
    """Each CA's CRL as served, once the server has issued it (or the server's error)."""
    found: dict[str, bytes] = {}
    for _ in range(300):  # wait for the listener and the first round (up to ~30 s)
        for name in names:
            if name in found:
                continue
            try:
                with urllib.request.urlopen(pair.url(name), timeout=2) as resp:
                    found[name] = resp.read()
            except (urllib.error.URLError, ConnectionError):
                pass
        if len(found) == len(names) or proc.poll() is not None:
            break
        time.sleep(0.1)
    if len(found) < len(names):
        proc.terminate()
        assert proc.stderr is not None
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"CRLs not served: {sorted(set(names) - set(found))}: {err!r}")
    return found


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    return err.decode()


def _openssl_checks(pair: Pair, name: str, der: bytes) -> None:
    """``openssl crl`` verifies the served CRL's signature with the issuing CA certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return  # the signature is still checked by cryptography below
    path = pair.base / f"served-{name}.crl"
    path.write_bytes(der)
    bundle = pair.base / "cas.pem"
    bundle.write_bytes(
        b"".join(
            CertificateAuthority.open(d).certificate.public_bytes(Encoding.PEM)
            for d in (pair.root, pair.op1)
        )
    )
    proc = subprocess.run(
        [openssl, "crl", "-inform", "DER", "-in", str(path), "-CAfile", str(bundle), "-noout"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "verify OK" in proc.stdout + proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "how",
    ["each CA its file", "shared file and one CA's own", "one CA's own file and the environment"],
)
def test_each_ca_with_its_own_passphrase(pair: Pair, how: str) -> None:
    ca_args = ["--ca", str(pair.root), "--ca", str(pair.op1)]
    env = _env()
    if how == "each CA its file":
        args = [f"--pass-source={pair.root}={pair.root_pass}", "--pass-source",
                f"{pair.op1}={pair.op1_pass}"]  # fmt: skip
    elif how == "shared file and one CA's own":
        args = ["--pass-source", str(pair.root_pass), "--pass-source",
                f"{pair.op1}={pair.op1_pass}"]  # fmt: skip
    else:
        args = ["--pass-source", f"{pair.root}/={pair.root_pass}"]  # the directory spelt otherwise
        env = _env(CADUCEE_CA_PASS=OP1_PASS)
    proc = _serve(pair, [*ca_args, *args], env)
    try:
        crls = _fetch_crls(pair, proc, ["root", "op1"])
    finally:
        err = _stop(proc)
    assert ROOT_PASS not in err and OP1_PASS not in err
    for name, directory in (("root", pair.root), ("op1", pair.op1)):
        crl = x509.load_der_x509_crl(crls[name])
        ca = CertificateAuthority.open(directory)
        assert crl.issuer == ca.certificate.subject
        assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert number == 2  # issued by the server (the CA's first CRL was number 1)
        _openssl_checks(pair, name, crls[name])


def test_the_single_file_form_still_works(pair: Pair) -> None:
    proc = _serve(pair, ["--ca", str(pair.op1), "--pass-source", str(pair.op1_pass)], _env())
    try:
        crls = _fetch_crls(pair, proc, ["op1"])
    finally:
        _stop(proc)
    crl = x509.load_der_x509_crl(crls["op1"])
    assert crl.is_signature_valid(
        CertificateAuthority.open(pair.op1).certificate.public_key()  # type: ignore[arg-type]
    )


def _refused(pair: Pair, args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run a serve that must refuse before listening: (exit status, stderr lines)."""
    proc = _serve(pair, args, env)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode().strip().splitlines()


def test_one_file_for_two_different_passphrases_names_the_ca(pair: Pair) -> None:
    code, lines = _refused(
        pair, ["--ca", str(pair.root), "--ca", str(pair.op1), "--pass-source", str(pair.root_pass)],
        _env(),
    )  # fmt: skip
    assert code == 5
    assert lines == [
        f"caducee: error: {pair.op1}/ca.key.pem: cannot decrypt the CA key (wrong passphrase?)"
    ]


def test_no_terminal_and_no_source_names_the_ca(pair: Pair) -> None:
    code, lines = _refused(
        pair, ["--ca", str(pair.root), "--ca", str(pair.op1),
               "--pass-source", f"{pair.root}={pair.root_pass}"], _env(),
    )  # fmt: skip
    assert code == 2
    assert lines == [
        f"caducee: error: the CA 'Operator 1 CA' ({pair.op1}) key passphrase is needed: no "
        f"terminal to ask on; give --pass-source {pair.op1}=FILE (or --pass-source FILE for "
        "every CA) or set CADUCEE_CA_PASS"
    ]
    code, lines = _refused(pair, ["--ca", str(pair.root), "--ca", str(pair.op1)], _env())
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(
        f"caducee: error: the CA 'National Health Root' ({pair.root}) key passphrase is needed"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pass-source", "{base}/elsewhere={root_pass}"],
         "--pass-source {base}/elsewhere={root_pass}: not CA_DIR=FILE with one of the --ca "
         "directories ({root}, {op1})"),
        (["--pass-source", "{root}={base}/missing"],
         "--pass-source {root}={base}/missing: no such file {base}/missing"),
        (["--pass-source", "{base}/missing"], "--pass-source {base}/missing: no such file"),
        (["--pass-source", "{root}={root_pass}", "--pass-source", "{root}={op1_pass}"],
         "--pass-source: two passphrase files for the CA {root}"),
        (["--pass-source", "{root_pass}", "--pass-source", "{op1_pass}"],
         "--pass-source {op1_pass}: a passphrase file for every CA is already given "
         "({root_pass}); name the CA for the others: --pass-source CA_DIR=FILE"),
    ],
)  # fmt: skip
def test_pass_source_forms_are_checked(
    pair: Pair, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {
        "base": pair.base, "root": pair.root, "op1": pair.op1,
        "root_pass": pair.root_pass, "op1_pass": pair.op1_pass,
    }  # fmt: skip
    argv = ["ca", "serve", "--renew-crls", "--port", str(pair.port), "--ca", str(pair.root),
            "--ca", str(pair.op1), *(a.format(**names) for a in args)]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"caducee: error: {message.format(**names)}"
    ]
