"""What every mail command shares: the ``--config`` and ``--json`` options, JSON output, and
failures reported the same way on standard error (by ``caducee.cli.main``) and, with
``--json``, as a JSON object on standard output for the script reading it.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import click

from caducee.errors import CaduceeError

__all__ = ["CONFIG_OPTION", "JSON_OPTION", "MailCommand", "emit", "emit_error", "failure"]


def emit(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))


class MailCommand(click.Command):
    """A mail command whose failures, with ``--json``, also print ``{"error", "exit_code"}`` on
    standard output, so a script reading stdout sees them; ``caducee.cli.main`` still prints
    the one line on standard error and sets the exit code."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # before parsing, which consumes ``args``
        wants_json = "--json" in args and any(p.name == "as_json" for p in self.params)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:  # bad options: parsed before the command runs
            if wants_json:
                emit_error(exc.format_message(), exc.exit_code)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, BrokenPipeError):
            raise
        except Exception as exc:
            if ctx.params.get("as_json"):
                emit_error(*failure(exc), getattr(exc, "details", None))
            raise
        except KeyboardInterrupt:
            if ctx.params.get("as_json"):
                emit_error("interrupted", 130)
            raise


def failure(exc: BaseException) -> tuple[str, int]:
    """The one-line message and the exit code for ``exc``, whatever it is."""
    if isinstance(exc, CaduceeError):
        return str(exc), exc.exit_code
    if isinstance(exc, click.exceptions.Abort):
        return "aborted", 130
    if isinstance(exc, click.ClickException):
        return exc.format_message(), exc.exit_code
    return f"internal error ({type(exc).__name__}): {exc}; set CADUCEE_DEBUG=1 for details", 70


def emit_error(message: str, code: int, details: dict[str, Any] | None = None) -> None:
    emit({**(details or {}), "error": message, "exit_code": code})


CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    default=None,
    help="Configuration file (default: the platform's configuration directory).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
