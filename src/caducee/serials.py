"""How caducee prints certificate serial numbers, the same way everywhere (CA and directory).

The form is the one ``openssl x509 -serial`` prints: upper-case hexadecimal with an even
number of digits, so a leading zero nibble is kept (``066A...``, never ``66A...``). Operators
compare serials between caducee's output, openssl and CRL dumps; one format avoids misreads.
"""

from __future__ import annotations

__all__ = ["format_serial", "parse_serial"]


def format_serial(n: int) -> str:
    """``n`` as upper-case hex with an even number of digits (0 -> ``"00"``; negative: ``-``)."""
    if n < 0:  # not valid in a certificate, but printable when a broken one is described
        return "-" + format_serial(-n)
    digits = f"{n:X}"
    return digits if len(digits) % 2 == 0 else "0" + digits


def parse_serial(text: str) -> int:
    """A serial as printed by caducee or openssl (any case, ``:`` separators allowed).

    Raises ValueError when ``text`` is not hexadecimal.
    """
    cleaned = text.strip().replace(":", "")
    if not cleaned or not all(c in "0123456789abcdefABCDEF" for c in cleaned):
        raise ValueError(f"not a hexadecimal serial number: {text[:40]!r}")
    return int(cleaned, 16)
