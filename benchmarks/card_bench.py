"""Card (SoftHSM2) versus software key: cost per operation and per message, and card operations
per message.

Run: .venv/bin/python benchmarks/card_bench.py [N] [--write]
Issues a throw-away RSA-2048 card in a private temporary SoftHSM2, then times sign_digest and
decrypt_key (OAEP-SHA-1) on the card and with a SoftwareKey holding a key of the same size, and a
whole 10 KB message: sign_data, and decrypt_data of an AES-256-GCM message. The card column
counts private-key operations per message (the target is exactly one). ``--write`` puts the table
in docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from caducee import devpki
from caducee.card import issue_card
from caducee.card.devissuer import devpki_issuer
from caducee.core.algorithms import Digest, KeyTransport, SignatureScheme
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data
from caducee.core.cms.sign import sign_data
from caducee.keys.open import open_card
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, Pkcs11Module
from caducee.keys.software import SoftwareKey


def per_call_ms(fn: Callable[[], object], n: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main(n: int, write: bool) -> None:
    if not os.path.exists(SOFTHSM2_MODULE):
        sys.exit(f"SoftHSM2 is not installed ({SOFTHSM2_MODULE})")
    ca = devpki.make_ca("bench CA")
    soft_id = devpki.make_identity(ca, "soft@bench.test")
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp)
        base.chmod(0o700)
        (base / "tokens").mkdir(mode=0o700)
        conf = base / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {base / 'tokens'}\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        with Pkcs11Module(SOFTHSM2_MODULE) as module:
            issue_card(
                module, label="bench", so_pin="12345678", user_pin="1234",
                issuer=devpki_issuer(ca, "card@bench.test"),
            )  # fmt: skip
            card = open_card(
                f"pkcs11:token=bench?module-path={SOFTHSM2_MODULE}",
                module=module,
                pin_callback=lambda _: "1234",
            )
            try:
                rows = run(card, soft_id, n)
            finally:
                card.close()
    table = [
        f"RSA-2048, median of {n} calls, ms ({time.strftime('%Y-%m-%d')})",
        "",
        "| operation | SoftHSM2 card | software key | card ops / message |",
        "|---|---|---|---|",
        *(f"| {name} | {c:.2f} | {s:.2f} | {ops} |" for name, c, s, ops in rows),
    ]
    print("\n".join(table))
    if write:
        sys.path.insert(0, str(pathlib.Path(__file__).parent))
        from _report import machine, write_section

        write_section("card_bench", "## Card (SoftHSM2) vs software key\n\n" + "\n".join(table)
                      + f"\n\n{machine()}\n")  # fmt: skip


def run(card, soft_id, n):  # type: ignore[no-untyped-def]
    digest = bytes(32)
    sig_card = card.signing_key()
    (dec_card,) = card.decryption_keys()
    sig_soft: SoftwareKey = soft_id.signing
    dec_soft: SoftwareKey = soft_id.encryption
    oaep = KeyTransport.RSA_OAEP_SHA1
    sha1 = hashes.SHA1()  # OAEP-SHA-1: what SoftHSM2 and most cards decrypt
    pad = padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)
    wrapped_card = dec_card.certificate.public_key().encrypt(bytes(32), pad)
    wrapped_soft = dec_soft.certificate.public_key().encrypt(bytes(32), pad)
    content = os.urandom(10_000)
    now = dt.datetime.now(dt.UTC)
    msg_card = encrypt_data(content, [Recipient(dec_card.certificate, oaep)], random=os.urandom)
    msg_soft = encrypt_data(content, [Recipient(dec_soft.certificate, oaep)], random=os.urandom)

    def ops(fn: Callable[[], object]) -> int:
        before = card.operations
        fn()
        return int(card.operations - before)

    pkcs1 = SignatureScheme.RSA_PKCS1V15
    cases = [
        ("sign_digest (PKCS#1 v1.5)",
         lambda: sig_card.sign_digest(digest, Digest.SHA256, pkcs1),
         lambda: sig_soft.sign_digest(digest, Digest.SHA256, pkcs1)),
        ("sign_digest (PSS)",
         lambda: sig_card.sign_digest(digest, Digest.SHA256, SignatureScheme.RSA_PSS),
         lambda: sig_soft.sign_digest(digest, Digest.SHA256, SignatureScheme.RSA_PSS)),
        ("decrypt_key (OAEP-SHA-1)",
         lambda: dec_card.decrypt_key(wrapped_card, oaep),
         lambda: dec_soft.decrypt_key(wrapped_soft, oaep)),
        ("sign 10 KB message",
         lambda: sign_data(content, sig_card, signing_time=now),
         lambda: sign_data(content, sig_soft, signing_time=now)),
        ("decrypt 10 KB message (AES-256-GCM)",
         lambda: decrypt_data(msg_card, [dec_card]),
         lambda: decrypt_data(msg_soft, [dec_soft])),
    ]  # fmt: skip
    return [
        (name, per_call_ms(on_card, n), per_call_ms(soft, n), ops(on_card))
        for name, on_card, soft in cases
    ]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--write"]
    main(int(args[0]) if args else 50, "--write" in sys.argv)
