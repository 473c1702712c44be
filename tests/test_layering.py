"""The layering rules, checked from the source (ast) and in fresh interpreters.

* ``server/protocol`` imports the standard library only, and no I/O, thread or
  clock module: it is the sans-I/O codec shared by everyone.
* ``gui/`` and ``loadtest/`` may use ``server.protocol`` but nothing else of the
  server.
* ``import server`` imports nothing; ``import server.protocol`` brings in no
  socket or thread module that the standard library would not load anyway.
* Inside ``server/``, a module imports only from its own room or the rooms
  above it in :data:`ROOMS` (``if TYPE_CHECKING:`` imports included): the codec,
  operations, the bus records, shared state, the bus backends, what commands
  mean, then the processes that run it all.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "server" / "protocol"
CLIENT_PACKAGES = ("gui", "loadtest")
ROOMS = ("server.protocol", "server.ops", "server.bus.records", "server.state", "server.bus", "server.irc",
         "server.process", "server.main", "server.__main__")

# I/O, threads and clocks: none of these may be imported by the codec itself.
IO_MODULES = frozenset(
    {
        "asyncio",
        "concurrent",
        "datetime",
        "multiprocessing",
        "queue",
        "sched",
        "select",
        "selectors",
        "signal",
        "socket",
        "socketserver",
        "ssl",
        "subprocess",
        "threading",
        "time",
        "_socket",
        "_thread",
    }
)


def module_name(path: Path) -> str:
    """``server/protocol/message.py`` -> ``server.protocol.message``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Absolute names of every module ``source`` imports, wherever the statement is
    (functions, ``if TYPE_CHECKING:`` blocks included); ``from X import a`` yields
    ``X.a`` too, since ``a`` may be a submodule. ``importlib.import_module`` and
    ``__import__`` with a literal name count as imports."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 >= len(parts):
                    yield "<relative import beyond the top level>"
                    continue
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            for alias in node.names:
                yield f"{target}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.args[0].value


def imports_of(path: Path) -> set[str]:
    return set(imported_modules(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"))


def python_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def top_level(name: str) -> str:
    return name.partition(".")[0]


def protocol_violations(imports: set[str]) -> list[str]:
    bad = []
    for name in sorted(imports):
        if name == "server.protocol" or name.startswith("server.protocol."):
            continue  # within the package (relative imports resolve to these)
        if top_level(name) not in sys.stdlib_module_names:
            bad.append(f"{name} is not in the standard library")
        elif top_level(name) in IO_MODULES:
            bad.append(f"{name} does I/O, threads or clocks")
    return bad


def client_violations(imports: set[str]) -> list[str]:
    bad = []
    for name in sorted(imports):
        if name.startswith("<"):
            bad.append(name[1:-1])
        elif top_level(name) != "server" or name == "server":
            continue  # the bare package is empty (test_server_package_init_is_empty)
        elif not (name == "server.protocol" or name.startswith("server.protocol.")):
            bad.append(f"{name} is server code other than server.protocol")
    return bad


def room(name: str) -> int | None:
    """The index in ROOMS of the room ``name`` is in (the longest match), or None."""
    best = None
    for i, prefix in enumerate(ROOMS):
        if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(ROOMS[best])):
            best = i
    return best


def room_violations(module: str, imports: set[str]) -> list[str]:
    own = room(module)
    if own is None:
        return []
    bad = []
    for name in sorted(imports):
        theirs = room(name)
        if theirs is not None and theirs > own:
            bad.append(f"{name} ({ROOMS[theirs]}) is below {ROOMS[own]}")
    return bad


# -- the checker itself --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import os, re.x", "m", {"os", "re.x"}),
        ("from . import errors", "server.protocol.message", {"server.protocol", "server.protocol.errors"}),
        ("from .errors import X", "server.protocol.message", {"server.protocol.errors", "server.protocol.errors.X"}),
        ("from .. import bus", "server.protocol.message", {"server", "server.bus"}),
        ("from . import m", "gui", {"gui", "gui.m"}),
        ("from ... import x", "gui.m", {"<relative import beyond the top level>"}),
        ("from ..server import bus", "gui.m", {"<relative import beyond the top level>"}),
        ("from . import x", "dev", {"<relative import beyond the top level>"}),
        ("def f():\n    import socket\n", "m", {"socket"}),
        ("if TYPE_CHECKING:\n    from server.registry import R\n", "m", {"server.registry", "server.registry.R"}),
        ("importlib.import_module('server.bus')", "m", {"server.bus"}),
        ("__import__('threading')", "m", {"threading"}),
    ],
)
def test_imported_modules(source: str, module: str, expected: set[str]) -> None:
    is_package = module == "gui"
    assert set(imported_modules(source, module, is_package)) == expected


def test_the_checkers_can_fail() -> None:
    assert protocol_violations({"socket"})
    assert protocol_violations({"time"})
    assert protocol_violations({"threading"})
    assert protocol_violations({"yaml"})
    assert protocol_violations({"server.registry"})
    assert not protocol_violations({"re", "dataclasses", "__future__", "server.protocol.errors"})
    assert client_violations({"server.registry"})
    assert client_violations({"server.protocolx"})
    assert client_violations({"server.main"})
    assert client_violations({"<relative import beyond the top level>"})
    assert not client_violations({"server.protocol", "server.protocol.message", "tkinter", "gui.model", "locust"})
    # ``from server import protocol`` is fine, ``from server import bus`` is not.
    assert not client_violations(set(imported_modules("from server import protocol", "gui.net")))
    assert client_violations(set(imported_modules("from server import protocol, bus", "gui.net")))


# -- the rules ----------------------------------------------------------------------


def test_protocol_imports_only_the_standard_library() -> None:
    files = python_files(PROTOCOL)
    assert {p.name for p in files} >= {"__init__.py", "message.py", "framing.py", "errors.py"}
    problems = {str(p.relative_to(ROOT)): protocol_violations(imports_of(p)) for p in files}
    assert {path: bad for path, bad in problems.items() if bad} == {}


def test_clients_use_only_server_protocol() -> None:
    # gui/ and loadtest/ may still be empty; the rule holds for whatever is there.
    files = [p for package in CLIENT_PACKAGES if (ROOT / package).is_dir() for p in python_files(ROOT / package)]
    problems = {str(p.relative_to(ROOT)): client_violations(imports_of(p)) for p in files}
    assert {path: bad for path, bad in problems.items() if bad} == {}


def test_server_rooms_import_only_upward() -> None:
    files = [p for p in python_files(ROOT / "server") if room(module_name(p)) is not None]
    assert len(files) > 30
    problems = {str(p.relative_to(ROOT)): room_violations(module_name(p), imports_of(p)) for p in files}
    assert {path: bad for path, bad in problems.items() if bad} == {}
    # every module is in a room
    assert [str(p.relative_to(ROOT)) for p in python_files(ROOT / "server")
            if room(module_name(p)) is None and p.name != "__init__.py"] == []


def test_room_rule_catches_an_upward_import() -> None:
    assert room_violations("server.state.registry", {"server.process.worker"})
    assert room_violations("server.irc.channels", {"server.process.session.Session"})
    assert not room_violations("server.state.registry", {"server.bus.records", "server.protocol"})
    assert room_violations("server.bus.records", {"server.state.store"})


def test_server_package_init_is_empty() -> None:
    tree = ast.parse((ROOT / "server" / "__init__.py").read_text(encoding="utf-8"))
    statements = [
        ast.unparse(n) for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    assert statements == []  # a docstring at most


# -- fresh interpreters --------------------------------------------------------------


def run_fresh(code: str, *flags: str) -> dict[str, list[str]]:
    """Run ``code`` in a new interpreter at the project root; it prints JSON."""
    result = subprocess.run(
        [sys.executable, *flags, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


MEASURE = """
import json, sys
before = set(sys.modules)
{imports}
print(json.dumps({{
    "baseline": sorted(before),
    "added": sorted(set(sys.modules) - before),
    "file": [getattr(sys.modules.get("server"), "__file__", None) or ""],
}}))
"""


def test_import_server_imports_no_submodule() -> None:
    result = run_fresh(MEASURE.format(imports="import server"))
    assert Path(result["file"][0]) == ROOT / "server" / "__init__.py"
    assert [m for m in result["added"] if m.startswith("server.")] == []


def test_import_server_protocol_adds_no_io_modules() -> None:
    result = run_fresh(MEASURE.format(imports="import server.protocol"), "-S")
    assert Path(result["file"][0]) == ROOT / "server" / "__init__.py"
    assert "server.protocol.framing" in result["added"]
    # A bare interpreter already holds some of these (time, _thread, _signal):
    # only what importing the codec adds is ours to answer for.
    watched = {m for m in IO_MODULES if m not in result["baseline"]}
    assert {"socket", "threading", "select", "selectors", "asyncio", "ssl"} <= watched
    added_io = {m for m in result["added"] if top_level(m) in watched}
    if added_io:
        # Acceptable only if the codec's own (allowed) standard-library imports load
        # them too; a direct import of one is refused above and left out here.
        stdlib = sorted(
            {top_level(name) for p in python_files(PROTOCOL) for name in imports_of(p)}
            - {"server", "__future__"}
            - IO_MODULES
        )
        reference = run_fresh(MEASURE.format(imports="\n".join(f"import {m}" for m in stdlib)), "-S")
        assert added_io <= set(reference["added"]), added_io - set(reference["added"])
