"""Entry point of the ``caducee`` command: a lazy group and one-line error reporting.

Sub-command groups live in their own modules (``caducee.cli.smime``, ``caducee.cli.card``...) and
are imported only when used, so ``caducee smime`` does not pay for LDAP or PKCS#11 imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from caducee import __version__
from caducee.cli.commands import failure
from caducee.errors import CaduceeError

#: command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, tuple[str, str]] = {
    "smime": ("caducee.cli.smime:group", "Sign, verify, encrypt and decrypt S/MIME messages."),
    "card": ("caducee.cli.card:group", "Manage the professional's smart card (PKCS#11)."),
    "ca": ("caducee.cli.ca:group", "Run an operator's certification authority."),
    "directory": ("caducee.cli.directory:group", "Look up, publish and serve certificates."),
    "demo": ("caducee.cli.demo:command", "Run the demonstration on embedded defaults."),
    "init": ("caducee.cli.init:init", "Set up this workstation's configuration."),
    "send": ("caducee.cli.mail:send", "Sign, encrypt and send a message."),
    "fetch": ("caducee.cli.mail:fetch", "Fetch, decrypt and verify new messages."),
    "inbox": ("caducee.cli.mail:inbox", "List received messages with their security status."),
    "read": ("caducee.cli.mail:read", "Show one message."),
    "export": ("caducee.cli.mail:export", "Export a message and its attachments."),
    "agent": ("caducee.cli.mail:agent", "Run continuously: fetch new mail, retry the outbox."),
    "outbox": ("caducee.cli.mail:outbox", "Show or retry messages waiting to be sent."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (target, _) in COMMANDS.items() if _available(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None or not _available(entry[0]):
            return None
        module_name, attr = entry[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(target: str) -> bool:
    module_name = target.split(":")[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="caducee")
def cli() -> None:
    """caducee: secure S/MIME e-mail for health professionals."""


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; every failure becomes one line on stderr and a non-zero exit code."""
    try:
        cli.main(args=argv, prog_name="caducee", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # last resort included: still one line, the traceback on demand
        expected = isinstance(exc, (CaduceeError, click.ClickException, click.exceptions.Abort))
        if not expected and os.environ.get("CADUCEE_DEBUG"):
            raise
        _fail(*failure(exc))
    return 0


def _fail(message: str, code: int) -> None:
    click.echo(f"caducee: error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
