"""Mail transport benchmark: send and fetch 100 KB messages through real servers, plain vs S/MIME.

Path (same run, same servers): SmtpSubmitter (STARTTLS + AUTH, one connection per message, as
the outbox sends) -> operator 1's submission server (aiosmtpd) -> operator 2's MX -> LMTP ->
Dovecot (Maildir) -> ImapMailbox.fetch_new (STARTTLS, UID FETCH BODY.PEEK[] in batches).

  plain    the 100 KB message as is
  caducee  the same message signed (alice, RSA-2048 software key) and encrypted for bob and
           alice (AES-256-GCM, RSA-OAEP) before sending; after fetching, decrypted and verified

Rates are messages per second over the whole batch. Target (issue 5): caducee at least half the
plain rate, with software keys.
Usage: python benchmarks/mail_bench.py [--count 40] [--size 100k] [--rounds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from caducee import devpki, smime
from caducee.mail import servers
from caducee.mail.api import Envelope

from _report import machine, write_section

ALICE, BOB = "alice@op1.test", "bob@op2.test"


def message(index: int, size: int) -> bytes:
    head = (
        f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: result {index}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: application/pdf; name=result.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    body = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    return head + body[: max(0, size - len(head))]


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=40, help="messages per variant")
    parser.add_argument("--size", default="100k", help="message size, e.g. 100k or 1m")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    reason = servers.dovecot_available()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 1
    unit = {"k": 1024, "m": 1 << 20}.get(args.size[-1].lower(), 1)
    size = int(args.size.rstrip("kKmM")) * unit
    count = args.count

    ca = devpki.make_ca("Bench CA")
    alice, bob = devpki.make_identity(ca, ALICE), devpki.make_identity(ca, BOB)
    recipients = [
        smime.Recipient(bob.encryption.certificate),
        smime.Recipient(alice.encryption.certificate),
    ]
    messages = [message(i, size) for i in range(count)]
    envelope = Envelope(ALICE, (BOB,))
    samples: dict[str, dict[str, list[float]]] = {
        v: {"send": [], "fetch": []} for v in ("plain", "caducee")
    }

    crypto_s = {"protect": 0.0, "open": 0.0}

    with tempfile.TemporaryDirectory(prefix="caducee-mailbench-") as tmp:
        tls = servers.make_tls_files(Path(tmp))
        users = {"op1.test": {ALICE: "a-pw"}, "op2.test": {BOB: "b-pw"}}
        with servers.MailNetwork(users, tls=tls) as net:
            submitter = net.submitter(ALICE, timeout=60)
            inbox = net.mailbox(BOB, timeout=60)
            inbox.batch_count = 8
            last = None
            # Rounds alternate plain and caducee so that load from elsewhere hits both alike.
            for _ in range(args.rounds):
                for variant in ("plain", "caducee"):

                    def send(variant: str = variant) -> int:
                        for data in messages:
                            wire = data
                            if variant == "caducee":
                                start = time.perf_counter()
                                wire = smime.protect(
                                    data, signer=alice.signing, recipients=recipients
                                )
                                crypto_s["protect"] += time.perf_counter() - start
                            submitter.submit(envelope, wire)
                        return len(messages)

                    def fetch(variant: str = variant) -> int:
                        nonlocal last
                        n = 0
                        for remote in inbox.fetch_new(last, prefetch=True):
                            last = remote.uid
                            if variant == "caducee":
                                start = time.perf_counter()
                                opened = smime.open(remote.data, keys=[bob.encryption])
                                crypto_s["open"] += time.perf_counter() - start
                                if not opened.signature_valid:
                                    raise SystemExit("benchmark message did not verify")
                            n += 1
                        return n

                    send_s, sent = timed(send)
                    fetch_s, fetched = timed(fetch)
                    if fetched != sent:
                        raise SystemExit(f"{variant}: sent {sent}, fetched {fetched}")
                    samples[variant]["send"].append(sent / send_s)
                    samples[variant]["fetch"].append(fetched / fetch_s)
                    print(
                        f"{variant}: send {sent / send_s:.1f} msg/s, "
                        f"fetch {fetched / fetch_s:.1f} msg/s",
                        file=sys.stderr,
                    )
            inbox.close()

    plain = {k: statistics.median(v) for k, v in samples["plain"].items()}
    crypto = {k: statistics.median(v) for k, v in samples["caducee"].items()}
    mb = size / 2**20
    lines = [
        f"## Mail transport: {count} messages of {args.size} through real servers",
        "",
        f"Median of {args.rounds} alternating rounds (plain, caducee, plain, ...).",
        "",
        "SMTP submission (STARTTLS + AUTH) -> relay to the other operator's MX -> LMTP -> Dovecot"
        " -> IMAP fetch (STARTTLS). `caducee` adds sign + encrypt before sending and decrypt +"
        " verify after fetching (RSA-2048 software keys, AES-256-GCM, two recipients). MiB/s"
        " counts the plain message size; the S/MIME wire form is about 1.4 times larger.",
        "",
        "| direction | plain msg/s | caducee msg/s | caducee / plain | target |",
        "|---|---|---|---|---|",
    ]
    for direction in ("send", "fetch"):
        ratio = crypto[direction] / plain[direction]
        lines.append(
            f"| {direction} | {plain[direction]:.1f} ({plain[direction] * mb:.1f} MiB/s) "
            f"| {crypto[direction]:.1f} ({crypto[direction] * mb:.1f} MiB/s) "
            f"| {ratio:.2f} | >= 0.5 {'met' if ratio >= 0.5 else 'NOT met'} |"
        )
    per_msg = {k: v / (count * args.rounds) * 1000 for k, v in crypto_s.items()}
    lines += [
        "",
        f"Crypto alone, same run: sign + encrypt {per_msg['protect']:.1f} ms, decrypt + verify "
        f"{per_msg['open']:.1f} ms per message; a plain IMAP fetch costs "
        f"{1000 / plain['fetch']:.1f} ms per message (Dovecot serves it from the page cache, "
        "fetched in batches of 8 with the next batch prefetched while the caller decrypts). "
        "Sending is dominated by the per-message SMTP session (STARTTLS, AUTH, relay, LMTP), so "
        "the crypto hides in it; fetching is so cheap that decrypt + verify (one RSA-2048 "
        "private-key operation, base64, signature check) is the larger part.",
        "",
        f"Machine: {machine()}. Shared CPU: compare ratios, not absolute rates.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("mail", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
