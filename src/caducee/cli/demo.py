"""``caducee demo``: the main job end to end, on embedded defaults, in well under a minute.

Two operators under a national root (CA, public directory, CRLs, SMTP service writing Maildirs),
three professionals (SoftHSM2 cards when installed, software keys otherwise), a signed and
encrypted referral with a PDF across operators, its verification, the read receipt coming back,
and what is refused or flagged. Everything lives in a temp dir removed at the end; only the
encrypted wire message is kept (``--out-dir``), so it can be fed to ``openssl cms``.
"""

from __future__ import annotations

import click
from rich.console import Console

from caducee.demo.scenario import check_out_dir, run_demo


@click.command("demo")
@click.option(
    "--out-dir", default="demo-out", show_default=True, help="Where to write the wire message."
)
@click.option(
    "--software-keys",
    is_flag=True,
    help="Use software keys even when SoftHSM2 is installed (no cards).",
)
def command(out_dir: str, software_keys: bool) -> None:
    """Two operators, three professionals: a signed, encrypted referral and its read receipt."""
    run_demo(Console(highlight=False), check_out_dir(out_dir), software_keys=software_keys)
