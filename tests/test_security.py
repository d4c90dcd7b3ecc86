"""Loading files from strangers runs no code: a lint over the package's own source."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tokens", "rewards", "rl")
# The one place allowed to subclass pickle.Unpickler: the restricted loader, which refuses
# every global.
ALLOWED_UNPICKLER = ROOT / "rl" / "data" / "common.py"


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_calls(source: str, path: Path) -> list[str]:
    """Calls that can run code from a file: pickle/marshal loads, torch.load without
    weights_only=True, yaml.load without a safe loader, eval, exec."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            bases = {_dotted(b) for b in node.bases}
            if "pickle.Unpickler" in bases and path != ALLOWED_UNPICKLER:
                found.append(f"{path.name}:{node.lineno} subclasses pickle.Unpickler")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kwargs = {k.arg: k.value for k in node.keywords}
        where = f"{path.name}:{node.lineno} {name}"
        if name in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads",
                    "pickle.Unpickler", "dill.load", "dill.loads"):
            found.append(where)
        elif name.endswith("torch.load"):
            wo = kwargs.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where} without weights_only=True")
        elif name == "yaml.load":
            found.append(f"{where} (use yaml.safe_load)")
        elif name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(where)
    return found


def test_package_code_loads_nothing_unsafely():
    problems = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            problems += unsafe_calls(path.read_text(), path)
    assert problems == [], problems


def test_the_lint_catches_what_it_is_for(tmp_path):
    bad = """
import pickle, torch, yaml
a = pickle.load(open("refs.p", "rb"))
b = torch.load("sam.pth")
c = torch.load("sam.pth", weights_only=False)
d = yaml.load(open("x.yaml"))
e = eval(open("x").read())
class U(pickle.Unpickler):
    pass
ok = torch.load("sam.pth", weights_only=True)
"""
    found = unsafe_calls(bad, tmp_path / "bad.py")
    assert len(found) == 6, found
    assert not any(":10 " in f for f in found)
