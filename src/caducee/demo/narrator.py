"""How the demo talks: numbered steps, indented facts, green checks and red flags (rich).

Why separate: the scenario says what happens; this decides how it looks. Everything printed goes
through :func:`rich.markup.escape` first when it comes from a message or a certificate, so a
subject like ``[...]`` is shown, not taken for markup.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape

__all__ = ["Narrator"]


class Narrator:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._step = 0

    def title(self, text: str) -> None:
        self.console.print(f"[bold]{escape(text)}[/]")

    def step(self, text: str) -> None:
        self._step += 1
        self.console.print(f"\n[bold cyan]{self._step}.[/] [bold]{escape(text)}[/]")

    def info(self, text: str) -> None:
        self.console.print(f"   {escape(text)}")

    def ok(self, text: str) -> None:
        self.console.print(f"   [green]✔ {escape(text)}[/]")

    def flag(self, text: str) -> None:
        self.console.print(f"   [bold red]✘ {escape(text)}[/]")

    def wire(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.console.print(f"     [dim]{escape(line)}[/]")

    def done(self, text: str) -> None:
        self.console.print(f"\n[bold green]{escape(text)}[/]")
