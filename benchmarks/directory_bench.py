"""Directory benchmark: lookup latency (LDAP cold / warm / cached, SQLite, HTTP) and a directory
of N subscribers (default 100,000): load time, size on disk, lookup time, SQLite and LDAP.

Not a test. Run from the project root:

    .venv/bin/python benchmarks/directory_bench.py [--count 100000] [--lookups 300]

It writes its tables into docs/benchmarks.md. Certificates are real (signed by a throw-away
P-256 CA) but reuse two RSA-2048 subscriber keys, so generating 2N certificates takes about
0.3 ms each instead of a key generation each. LDAP is loaded offline with slapadd, as an operator
would for a bulk import; SQLite with SqliteDirectory.bulk_load in one transaction.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from caducee import devpki
from caducee.directory import slapd
from caducee.directory.api import DirectoryEntry, der
from caducee.directory.federation import FederatedDirectory
from caducee.directory.http import HttpDirectory, start_server
from caducee.directory.ldap import LdapDirectory, ldif_record
from caducee.directory.sqlite import SqliteDirectory

from _report import write_section

ROOT = pathlib.Path(__file__).resolve().parent.parent
SURNAMES = 1000  # distinct surnames: a name lookup matches about count/1000 people
PROFESSIONS = ("Médecin généraliste", "Cardiologue", "Infirmier", "Pharmacien", "Sage-femme")


def email_of(i: int) -> str:
    return f"pro{i:06d}@op1.test"


def pid_of(i: int) -> str:
    return f"{10_000_000_000 + i}"


def surname_of(i: int) -> str:
    return f"Nom{i % SURNAMES:04d}"


class Factory:
    """Professionals' certificate pairs, fast: one CA signature each, two reused keys."""

    def __init__(self) -> None:
        self.ca = devpki.make_ca("caducee Bench CA", kind="p256")
        self.sig_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.enc_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        ski = self.ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)

    def _cert(self, i: int, key: rsa.RSAPrivateKey, signature: bool) -> x509.Certificate:
        given = f"Prenom{i % 97}"
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Etablissement {i % 500}"),
                x509.NameAttribute(NameOID.TITLE, PROFESSIONS[i % len(PROFESSIONS)]),
                x509.NameAttribute(NameOID.SURNAME, surname_of(i)),
                x509.NameAttribute(NameOID.GIVEN_NAME, given),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, pid_of(i)),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{given} {surname_of(i)}"),
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now)
            .not_valid_after(self.now + dt.timedelta(days=1095))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=signature,
                    content_commitment=signature,
                    key_encipherment=not signature,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email_of(i))]), False)
            .add_extension(self.aki, False)
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier("http://crl.op1.test/op1.crl")],
                            None,
                            None,
                            None,
                        )
                    ]
                ),
                False,
            )
            .sign(self.ca.key, hashes.SHA256())
        )

    def entry(self, i: int) -> DirectoryEntry:
        sig = self._cert(i, self.sig_key, True)
        enc = self._cert(i, self.enc_key, False)
        return DirectoryEntry(
            email=email_of(i),
            common_name=f"Prenom{i % 97} {surname_of(i)}",
            surname=surname_of(i),
            given_name=f"Prenom{i % 97}",
            profession=PROFESSIONS[i % len(PROFESSIONS)],
            organisation=f"Etablissement {i % 500}",
            professional_id=pid_of(i),
            certificates=(sig, enc),
        )


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latency(fn: Callable[[int], object], samples: list[int]) -> tuple[float, float]:
    """(median, p95) in milliseconds over ``samples``."""
    times = []
    for i in samples:
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def disk_usage(path: pathlib.Path) -> int:
    """Bytes really allocated (mdb files are sparse)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="subscribers (default 100000)")
    parser.add_argument("--lookups", type=int, default=300, help="lookups per measurement")
    parser.add_argument("--output", help="write here instead of docs/benchmarks.md")
    args = parser.parse_args()
    if not slapd.available():
        print("slapd is not installed: LDAP rows need it", file=sys.stderr)
        return 1
    rng = random.Random(4)  # sampling, not security
    n = args.count
    samples = [rng.randrange(n) for _ in range(args.lookups)]
    name_samples = [rng.randrange(min(n, SURNAMES)) for _ in range(max(20, args.lookups // 10))]
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory(prefix="caducee-bench-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        factory = Factory()
        ldif = tmp / "people.ldif"
        server = slapd.Slapd("dc=op1,dc=test", workdir=tmp / "slapd")
        (tmp / "slapd").mkdir()

        # -- build: certificates, SQLite bulk load and the LDIF, in one pass ------------------
        print(f"generating {n} subscribers (2 certificates each)...", file=sys.stderr)
        gen_time = 0.0

        def entries() -> Iterator[DirectoryEntry]:
            nonlocal gen_time
            with ldif.open("w") as out:
                for i in range(n):
                    start = time.perf_counter()
                    entry = factory.entry(i)
                    out.write(ldif_record(entry, server.people_dn))
                    gen_time += time.perf_counter() - start
                    yield entry

        db_path = tmp / "directory.sqlite"
        sqlite_dir = SqliteDirectory(db_path, name="sqlite")
        load_total = timed(lambda: sqlite_dir.bulk_load(entries()))
        sqlite_load = load_total - gen_time
        sqlite_dir.close()  # checkpoints the WAL into the file
        sqlite_dir = SqliteDirectory(db_path, name="sqlite")
        sqlite_size = disk_usage(db_path)
        print(f"  generated in {gen_time:.1f}s; SQLite load {sqlite_load:.1f}s", file=sys.stderr)

        print("slapadd...", file=sys.stderr)
        ldap_load = timed(lambda: server.configure(ldif))
        ldap_size = disk_usage(tmp / "slapd" / "db")
        server.start()
        try:
            # -- lookups -----------------------------------------------------------------------
            def sq(kind: str) -> Callable[[int], object]:
                return {
                    "email": lambda i: sqlite_dir.lookup(email=email_of(i)),
                    "id": lambda i: sqlite_dir.lookup(professional_id=pid_of(i)),
                    "name": lambda i: sqlite_dir.lookup(name=surname_of(i)),
                }[kind]

            ldap_warm = LdapDirectory(server.url, server.people_dn, name="op1", timeout=10)

            def ldap_cold(i: int) -> object:
                with LdapDirectory(server.url, server.people_dn, timeout=10) as fresh:
                    return fresh.lookup(email=email_of(i))

            def lw(kind: str) -> Callable[[int], object]:
                return {
                    "email": lambda i: ldap_warm.lookup(email=email_of(i)),
                    "id": lambda i: ldap_warm.lookup(professional_id=pid_of(i)),
                    "name": lambda i: ldap_warm.lookup(name=surname_of(i)),
                }[kind]

            check = ldap_warm.lookup(email=email_of(samples[0]))
            assert len(check.entries) == 1 and len(check.entries[0].certificates) == 2
            assert len(sqlite_dir.lookup(email=email_of(samples[0])).entries) == 1

            federation = FederatedDirectory([ldap_warm], ttl=3600, timeout=10)
            for i in samples:  # fill the cache
                federation.lookup(email=email_of(i))
            http_server = start_server(sqlite_dir)
            http_dir = HttpDirectory(http_server.url, timeout=10)

            measures = [
                ("LDAP, cold (connect + bind + search + unbind), by e-mail", ldap_cold, samples),
                ("LDAP, warm connection, by e-mail", lw("email"), samples),
                ("LDAP, warm connection, by professional id", lw("id"), samples),
                (
                    f"LDAP, warm, by surname (~{max(1, n // SURNAMES)} matches, capped at 100)",
                    lw("name"),
                    name_samples,
                ),
                (
                    "federation TTL cache hit (LDAP behind), by e-mail",
                    lambda i: federation.lookup(email=email_of(i)),
                    samples,
                ),
                ("SQLite, by e-mail", sq("email"), samples),
                ("SQLite, by professional id", sq("id"), samples),
                (
                    f"SQLite, by surname (~{max(1, n // SURNAMES)} matches, capped at 100)",
                    sq("name"),
                    name_samples,
                ),
                (
                    "HTTP client -> serve over SQLite (loopback), by e-mail",
                    lambda i: http_dir.lookup(email=email_of(i)),
                    samples,
                ),
            ]
            for label, fn, which in measures:
                print(f"  {label}...", file=sys.stderr)
                med, p95 = latency(fn, which)
                rows.append((label, f"{med:.2f}", f"{p95:.2f}"))
            http_server.shutdown()
            http_server.server_close()
            federation.close()
        finally:
            server.remove()
            sqlite_dir.close()

    cert_size = len(der(factory.entry(0).certificates[0]))
    lines = [
        "# Directory benchmark",
        "",
        f"Generated by `benchmarks/directory_bench.py --count {n} --lookups {args.lookups}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs shared with other jobs, one run (indicative, not a test).",
        "",
        f"Directory: {n:,} subscribers, each an entry with 2 certificates (signature + "
        f"encryption, RSA-2048 subject key, P-256 CA signature, {cert_size} bytes DER each).",
        "",
        "## Building the directory",
        "",
        "| backend | load | size on disk | per subscriber |",
        "|---|---|---|---|",
        f"| SQLite (`bulk_load`, one transaction) | {sqlite_load:.1f} s | {mib(sqlite_size)} "
        f"| {sqlite_size / n / 1024:.1f} KiB |",
        f"| OpenLDAP mdb (`slapadd -q` offline, 6 equality indexes) | {ldap_load:.1f} s "
        f"| {mib(ldap_size)} | {ldap_size / n / 1024:.1f} KiB |",
        "",
        f"Certificate generation (not counted above): {gen_time:.1f} s "
        f"({gen_time / (2 * n) * 1000:.2f} ms per certificate).",
        "",
        "## Lookup latency (ms)",
        "",
        "| lookup | median | p95 |",
        "|---|---|---|",
        *[f"| {label} | {med} | {p95} |" for label, med, p95 in rows],
        "",
        "Cold LDAP pays a TCP connection and an anonymous bind per lookup; the warm rows reuse "
        "one connection (what a long-running agent does). A federation cache hit returns "
        "without any network round trip; candidates still go through path validation, which is "
        "measured in the PKI benchmark.",
        "",
        "Notes: SQLite's load time is mostly the per-entry checks `publish` also makes (CA "
        "certificate, e-mail binding, key usage: each parses the certificate's extensions) and "
        "the SHA-256 fingerprints. LDAP stores each certificate twice (`userCertificate;binary` "
        "and the `userSMIMECertificate` bundle) plus six equality indexes, hence its size. A "
        "surname lookup decodes up to 100 entries (200 certificates); in LDAP the pure-Python "
        "ldap3 decoder dominates.",
        "",
    ]
    if n < 100_000:
        lines.insert(
            4,
            f"**Reduced run: {n:,} subscribers instead of 100,000** "
            "(rerun with `--count 100000`).\n",
        )
    text = "\n".join(lines).replace("\n## ", "\n### ").replace("# ", "## ", 1)
    print(text)
    if args.output:
        pathlib.Path(args.output).write_text(text)
    else:
        write_section("directory", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
