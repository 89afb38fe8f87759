"""Turning a decrypted MIME entity into something safe to show: text, a parts list, attachments.

HTML is never rendered: tags are stripped, scripts and styles dropped, and every link or image
address is listed for the reader instead of being fetched. Nothing here touches the network.
Attachment names from the message are reduced to a plain file name (no directories, no dot
files, no control characters) before anything is written.
"""

from __future__ import annotations

import dataclasses
import email.message
import email.parser
import email.policy
import html.parser
import re
import unicodedata

from caducee.core.mime import filenames

__all__ = ["Part", "Rendered", "html_to_text", "render_entity", "safe_filename"]

MAX_BODY_CHARS = 1 << 20
_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}


@dataclasses.dataclass(frozen=True)
class Part:
    index: int
    content_type: str
    filename: str | None  # already made safe
    size: int
    attachment: bool


@dataclasses.dataclass(frozen=True)
class Rendered:
    body: str
    body_type: str | None  # "text/plain", "text/html (shown as text)" or None
    links: tuple[str, ...]
    parts: tuple[Part, ...]


class _TextExtractor(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.links: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        if tag in _BLOCK:
            self.chunks.append("\n")
        for name, value in attrs:
            if value and name in ("href", "src", "background", "poster", "srcset"):
                kind = "link" if name == "href" else "remote content (not loaded)"
                self.links.append(f"{kind}: {value.strip()[:500]}")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title") and self._skip:
            self._skip -= 1
        if tag in _BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)


def html_to_text(source: str) -> tuple[str, list[str]]:
    """Visible text of an HTML document and the addresses it points at (never fetched)."""
    parser = _TextExtractor()
    parser.feed(source[:MAX_BODY_CHARS])
    parser.close()
    text = "".join(parser.chunks)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return out, list(dict.fromkeys(parser.links))


def safe_filename(name: str | None, fallback: str) -> str:
    """A plain, harmless file name from what the sender chose (never a path)."""
    if not name:
        return fallback
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*')
    name = name.strip().lstrip(".").strip()
    if not name or name in (".", ".."):
        return fallback
    stem, dot, ext = name.rpartition(".")
    if len(name) > 120:
        name = (stem[: 110 - len(ext)] + dot + ext) if dot else name[:120]
    return name


def _text_of(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")[:MAX_BODY_CHARS]
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", errors="replace")[:MAX_BODY_CHARS]


def _leaves(msg: email.message.Message) -> list[email.message.Message]:
    return [p for p in msg.walk() if not p.is_multipart()]


def _without_legacy_display(text: str) -> str:
    """The text of a part marked ``hp-legacy-display="1"`` without the header lines that lead
    it (RFC 9788 §4.5.3.3): they repeat protected fields for readers that ignore them, and
    this reader shows those fields from the protected headers."""
    blank = re.search(r"\r?\n\r?\n", text)
    if blank is None:
        return text
    lines = text[: blank.start()].splitlines()
    if lines and all(re.match(r"[A-Za-z][A-Za-z0-9-]*: ", line) for line in lines):
        return text[blank.end() :]
    return text


def render_entity(entity: bytes) -> tuple[Rendered, list[tuple[Part, bytes]]]:
    """Text body (text/plain preferred), links, parts list, and the attachments' bytes."""
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(entity)
    protected = msg.get_param("hp") in ("cipher", "clear")
    plain: str | None = None
    html_text: str | None = None
    links: list[str] = []
    parts: list[Part] = []
    attachments: list[tuple[Part, bytes]] = []
    for index, leaf in enumerate(_leaves(msg), start=1):
        ctype = leaf.get_content_type()
        disposition = filenames.disposition(leaf)
        raw_name = filenames.filename(leaf)
        is_attachment = disposition == "attachment" or (
            raw_name is not None and disposition != "inline"
        )
        payload = leaf.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = safe_filename(raw_name, f"attachment-{index}") if is_attachment else None
        part = Part(index, ctype, filename, len(data), is_attachment)
        parts.append(part)
        if is_attachment:
            attachments.append((part, data))
        elif ctype == "text/plain" and plain is None:
            plain = _text_of(leaf)
            if protected and leaf.get_param("hp-legacy-display") == "1":
                plain = _without_legacy_display(plain)
        elif ctype == "text/html" and html_text is None:
            html_text, links = html_to_text(_text_of(leaf))
    if plain is not None:
        rendered = Rendered(plain, "text/plain", tuple(links), tuple(parts))
    elif html_text is not None:
        rendered = Rendered(html_text, "text/html (shown as text)", tuple(links), tuple(parts))
    else:
        rendered = Rendered("", None, (), tuple(parts))
    return rendered, attachments
