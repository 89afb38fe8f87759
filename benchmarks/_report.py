"""Write one benchmark's table into docs/benchmarks.md, between markers named after it."""

from __future__ import annotations

import os
import pathlib
import platform
import re

import cryptography

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Each section is written by the script it names (`benchmarks/*.py`), which measures caducee against
the limit (the raw primitives, same process, same run) and against peers. Numbers come from one run
on one machine: compare ratios within a section, not absolute numbers across machines.
"""


def machine() -> str:
    return (
        f"Python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores"
    )


def busy_cpu_seconds() -> float:
    """CPU time spent by the whole machine so far (every process: servers included), from
    /proc/stat; 0.0 where it does not exist."""
    try:
        fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def write_section(name: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
