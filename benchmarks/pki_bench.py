"""Path validation cost per certificate with CRLs (two-operator PKI, time frozen).

Run: .venv/bin/python benchmarks/pki_bench.py [N]
Prints ms per validation for: a reused TrustStore + CrlCache (the intended use: CRLs parsed and
their signatures checked once, a path already checked against the same CRLs is not re-scaliced),
a cold check (pyhanko's full RFC 5280 run, linear in the CRL size), plain CRL lists (re-parsed every
call), and the four raw signature checks of the path for reference. Second argument: CRL entries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import pathlib
import sys
import tempfile
import time

from cryptography.hazmat.primitives.asymmetric import ec, padding

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from caducee.pki import (
    CAConfig,
    CertificateAuthority,
    CrlCache,
    ProfessionalIdentity,
    TrustStore,
    async_validate_certificate,
    validate_certificate,
)
from caducee.pki.ca import generate_ca_key

from _report import machine, write_section

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
AT = T0 + dt.timedelta(hours=2)


def build(base: pathlib.Path, revoked: int):  # type: ignore[no-untyped-def]
    root = CertificateAuthority.init_root(
        base / "root", CAConfig("Root", "http://127.0.0.1:9/root.crl"),
        key=generate_ca_key("p384"), passphrase=b"pw", now=T0,
    )  # fmt: skip
    op_a = CertificateAuthority.init_subordinate(
        base / "a", CAConfig("Operator A", "http://127.0.0.1:9/a.crl"), root,
        key=generate_ca_key("rsa2048"), passphrase=b"pw", now=T0,
    )  # fmt: skip
    ident = ProfessionalIdentity("Alice", "Martin", "alice@op-a.test", "10003456789")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = op_a.issue(key.public_key(), ident, "encryption", now=T0)
    for _ in range(revoked):  # a CRL of realistic size
        other = op_a.issue(key.public_key(), ident, "signature", now=T0)
        op_a.store.mark_revoked(other.serial_number, T0, "superseded")
    crls = [root.crl(now=T0), op_a.crl(now=T0)]
    return root, op_a, cert, crls


def timed(label: str, n: int, fn) -> float:  # type: ignore[no-untyped-def]
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    ms = (time.perf_counter() - start) * 1000 / n
    print(f"{label:<52} {ms:8.3f} ms")
    return ms


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        revoked = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
        root, op_a, cert, crls = build(pathlib.Path(tmp), revoked=revoked)
        trust = TrustStore([root.certificate], [op_a.certificate])
        cache = CrlCache(crls)
        print(
            f"path leaf <- RSA-2048 operator CA <- P-384 root; operator CRL: {len(crls[1])} entries"
        )
        floor_ms = timed("reference: 2 cert + 2 CRL signature checks", n, lambda: (
            cert.verify_directly_issued_by(op_a.certificate),
            op_a.certificate.verify_directly_issued_by(root.certificate),
            crls[1].is_signature_valid(op_a.certificate.public_key()),
            crls[0].is_signature_valid(root.certificate.public_key()),
        ))  # fmt: skip
        _ = padding
        reused = timed("validate_certificate, reused TrustStore + CrlCache", n, lambda: (
            validate_certificate(cert, purpose="encryption", trust=trust, crls=cache, at=AT)
        ))  # fmt: skip
        timed("cold: new TrustStore + CrlCache each call (full check)", max(n // 4, 1), lambda: (
            validate_certificate(
                cert, purpose="encryption", crls=CrlCache(crls), at=AT,
                trust=TrustStore([root.certificate], [op_a.certificate]),
            )
        ))  # fmt: skip
        timed("validate_certificate, CRL list re-parsed each call", max(n // 4, 1), lambda: (
            validate_certificate(cert, purpose="encryption", trust=trust, crls=crls, at=AT)
        ))  # fmt: skip

        import asyncio

        async def many() -> None:
            for _ in range(n):
                await async_validate_certificate(
                    cert, purpose="encryption", trust=trust, crls=cache, at=AT
                )

        start = time.perf_counter()
        asyncio.run(many())
        ms = (time.perf_counter() - start) * 1000 / n
        print(f"{'async_validate_certificate in one event loop':<52} {ms:8.3f} ms")
        print(f"ratio reused/reference: {reused / floor_ms:.1f}x")


def report() -> None:
    """Run, echo, and keep the output as the "pki" section of docs/benchmarks.md."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main()
    out = buffer.getvalue()
    print(out, end="")
    write_section(
        "pki",
        "## Path validation (`benchmarks/pki_bench.py`)\n\n"
        f"{machine()}. ms per validation of an encryption certificate, revocation by CRL.\n\n"
        f"```\n{out.rstrip()}\n```",
    )


if __name__ == "__main__":
    report()
