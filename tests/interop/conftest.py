"""gpgsm as an independent S/MIME peer, in a throw-away GNUPGHOME (see DESIGN.md for its limits)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from caducee import devpki

PASSPHRASE = "gpgsm-test"


@dataclasses.dataclass
class Gpgsm:
    home: pathlib.Path

    def run(self, *args: str, data: bytes | None = None, check: bool = True) -> bytes:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        cmd = ["gpgsm", "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0", *args]
        # The passphrase goes first on stdin; gpgsm reads the data from files we pass.
        proc = subprocess.run(
            cmd, input=(PASSPHRASE + "\n").encode() + (data or b""), capture_output=True,
            env=env, timeout=60,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"gpgsm {' '.join(args)} failed: {proc.stderr.decode()[-1500:]}")
        return proc.stdout + b"\n--stderr--\n" + proc.stderr

    def import_identity(self, identity: devpki.TestIdentity) -> None:
        for key in (identity.signing, identity.encryption):
            # gpgsm 2.2's PKCS#12 reader now and then fails to decrypt a valid file ("decryption
            # failed; trying charset ..."), depending on the random salt openssl picked: a new
            # file (new salt) imports. Seen about once in 300 imports; three tries are plenty.
            for attempt in range(3):
                out = self.run("--import", str(self._p12(key)), check=attempt == 2)
                if b"secret keys imported: 1" in out or b"unchanged: 1" in out:
                    break

    def _p12(self, key: object) -> pathlib.Path:
        # gpgsm 2.2 reads only legacy (3DES) PKCS#12: let openssl write it.
        cert = key.certificate  # type: ignore[attr-defined]
        private = key._key  # type: ignore[attr-defined]
        base = self.home / f"k{cert.serial_number}"
        base.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        base.with_suffix(".key").write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        out = base.with_suffix(".p12")
        subprocess.run(
            ["openssl", "pkcs12", "-export", "-legacy", "-inkey", str(base.with_suffix(".key")),
             "-in", str(base.with_suffix(".crt")), "-passout", f"pass:{PASSPHRASE}",
             "-out", str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        base.with_suffix(".key").unlink()
        return out


@pytest.fixture
def gpgsm(pki) -> Iterator[Gpgsm]:  # type: ignore[no-untyped-def]
    if shutil.which("gpgsm") is None or shutil.which("openssl") is None:
        pytest.skip("gpgsm (and openssl) are needed")
    # A short path: gpg-agent's socket path must stay under ~100 characters.
    home = pathlib.Path(tempfile.mkdtemp(prefix="cgs", dir="/tmp"))
    home.chmod(0o700)
    (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    (home / "gpgsm.conf").write_text("disable-crl-checks\n")
    g = Gpgsm(home)
    ca_file = home / "ca.pem"
    ca_file.write_bytes(pki.ca.certificate.public_bytes(serialization.Encoding.PEM))
    g.run("--import", str(ca_file))
    fpr = pki.ca.certificate.fingerprint(hashes.SHA1())
    (home / "trustlist.txt").write_text(f"{fpr.hex().upper()} S relax\n")
    try:
        yield g
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)},
                       capture_output=True, timeout=30)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
