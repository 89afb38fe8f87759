"""The sans-I/O rule: the core imports nothing that does I/O and reads no clock or randomness."""

from __future__ import annotations

import ast
import pathlib

import caducee.core

CORE = pathlib.Path(caducee.core.__file__).parent
FORBIDDEN_MODULES = {
    "asyncio", "http", "imaplib", "io_open", "ldap3", "os", "pathlib", "pkcs11", "PyKCS11",
    "random", "secrets", "shutil", "smtplib", "socket", "sqlite3", "ssl", "subprocess",
    "tempfile", "time", "urllib", "caducee.keys.software", "caducee.keys.pkcs11",
}  # fmt: skip
FORBIDDEN_CALLS = {"open", "now", "utcnow", "today", "urandom", "generate_private_key"}


def _core_files() -> list[pathlib.Path]:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 3
    return files


def test_core_imports_no_io_module() -> None:
    offenders = []
    for path in _core_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name in FORBIDDEN_MODULES or name.split(".")[0] in FORBIDDEN_MODULES:
                    offenders.append(f"{path.name}: import {name}")
    assert offenders == []


def test_core_calls_no_clock_randomness_or_open() -> None:
    offenders = []
    for path in _core_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in FORBIDDEN_CALLS:
                    offenders.append(f"{path.name}:{node.lineno}: {name}()")
    assert offenders == []


def test_checker_catches_a_violation(tmp_path: pathlib.Path) -> None:
    bad = "import socket\nfrom datetime import datetime\nx = datetime.now()\n"
    tree = ast.parse(bad)
    imports = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    calls = [
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]
    assert "socket" in FORBIDDEN_MODULES & set(imports)
    assert "now" in FORBIDDEN_CALLS & set(calls)
