"""What an eavesdropper can learn from the encrypted body: algorithms and recipient key ids.

Why: the demo shows what the network sees, and that is more than the headers — the CMS structure
names the content cipher and, for each recipient, the issuer and serial number of the
certificate its key was wrapped for (never a name, never the content). Parsed independently of
caducee's own CMS code with asn1crypto, for display only: anything unexpected yields no lines.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from asn1crypto import cms

__all__ = ["envelope_summary"]

_CIPHERS = {
    "aes128_gcm": "AES-128-GCM",
    "aes256_gcm": "AES-256-GCM",
    "aes128_cbc": "AES-128-CBC",
    "aes256_cbc": "AES-256-CBC",
}


def _transport(algorithm: cms.KeyEncryptionAlgorithm) -> str:
    name = algorithm["algorithm"].native
    if name == "rsaes_oaep":
        digest = algorithm["parameters"]["hash_algorithm"]["algorithm"].native
        return f"RSA-OAEP/{digest.upper().replace('SHA', 'SHA-')}"
    if name == "rsaes_pkcs1v15":
        return "RSA PKCS#1 v1.5"
    return str(name)


def envelope_summary(wire: bytes, owners: Mapping[int, str]) -> list[str]:
    """Lines describing the CMS envelope of ``wire``; ``owners`` names certificate serials."""
    try:
        body = wire.split(b"\r\n\r\n", 1)[1]
        info = cms.ContentInfo.load(base64.b64decode(body))
        content = info["content"]
        lines = [f"CMS {info['content_type'].native.replace('_', ' ')}"]
        if info["content_type"].native == "authenticated_enveloped_data":
            encrypted = content["auth_encrypted_content_info"]
        else:
            encrypted = content["encrypted_content_info"]
        cipher = encrypted["content_encryption_algorithm"]["algorithm"].native
        lines[0] += f", content encrypted with {_CIPHERS.get(cipher, cipher)}"
        for recipient in content["recipient_infos"]:
            if recipient.name != "ktri":
                lines.append(f"recipient ({recipient.name})")
                continue
            ktri = recipient.chosen
            how = _transport(ktri["key_encryption_algorithm"])
            if ktri["rid"].name != "issuer_and_serial_number":
                lines.append(f"key wrapped with {how} for a subject key identifier")
                continue
            rid = ktri["rid"].chosen
            serial = rid["serial_number"].native
            issuer = rid["issuer"].native.get("common_name") or rid["issuer"].human_friendly
            whose = owners.get(serial, "unknown")
            short = f"{serial:x}"[:16]
            lines.append(f"content key wrapped ({how}) for {issuer} #{short}… = {whose}")
        return lines
    except (IndexError, KeyError, ValueError, TypeError, AttributeError, binascii.Error):
        return []
