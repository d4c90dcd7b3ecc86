"""Imports go one way: rl → rewards → tokens. Each package imports with the ones above it
unimportable, and no package has an import cycle among its own modules."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tokens", "rewards", "rl")


def modules(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
import importlib
for m in {mods!r}:
    importlib.import_module(m)
print("imported", len({mods!r}))
"""


@pytest.mark.parametrize("package, blocked", [("tokens", ("rl", "rewards")), ("rewards", ("rl",))])
def test_a_package_imports_without_the_ones_above_it(package, blocked):
    mods = [m for m in modules(package) if not m.endswith("__main__")]
    code = BLOCKER.format(blocked=set(blocked), mods=mods)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PATH": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"imported {len(mods)}" in run.stdout


def imports_of(path: Path, package: str) -> set[str]:
    """Modules of `package` that the file imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    known = set(modules(package))
    return {m for m in found if m in known}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package):
    graph = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        # A package's __init__ imports its submodules to re-export them; those edges are not a
        # cycle of the code (a submodule importing its package's __init__ would be).
        graph[name] = {m for m in imports_of(path, package)
                       if not (parts[-1] == "__init__" and m.startswith(name + "."))}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
