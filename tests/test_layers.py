"""The import graph follows the flow: faces → chat → runtime → planning → models → quantize, with no circle — read
from the source (every import, also those inside functions, and `import_module` calls with a literal name)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower numbers are lower layers; a module may import its own layer and the ones below.
LAYERS = {
    "localseek.errors": 0, "localseek.sizes": 0, "localseek.runtime.options": 0, "quantize": 1,
    "localseek.models": 2, "localseek.nano": 2, "localseek.planning": 3, "localseek.runtime": 4,
    "localseek.chat": 5, "localseek.tui": 6, "localseek.serve": 6, "localseek.cli": 7, "localseek.__main__": 8,
    "localseek": 0,  # the package itself holds only __version__
}


def layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in LAYERS:
            return head, LAYERS[head]
    raise AssertionError(f"{module} belongs to no layer")


def modules() -> dict[str, Path]:
    found = {}
    for package in ("localseek", "quantize"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                add(node.args[0].value)
    return {m for m in out if m.split(".")[0] in ("localseek", "quantize")}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def test_every_import_points_down_the_flow() -> None:
    wrong = []
    for name, targets in graph().items():
        if name.startswith("localseek.nano") and name != "localseek.nano":
            continue  # nano's own submodules (problem generator, evaluation) are pure and self-contained
        here, rank = layer(name)
        for target in targets:
            there, other = layer(target)
            if other > rank and not target.startswith(here + "."):
                wrong.append(f"{name} ({here}) imports {target} ({there})")
    assert not wrong, "\n".join(sorted(wrong))


def test_leaf_modules_import_nothing_of_ours() -> None:
    g = graph()
    assert g["localseek.runtime.options"] == set()
    assert g["localseek.errors"] == set()
    assert {t for t in g["localseek.sizes"]} <= {"localseek.errors"}
    assert not [m for m, ts in g.items() if m.startswith("quantize") and any(t.startswith("localseek") for t in ts)]


def test_no_import_circle() -> None:
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            # a package's __init__ importing its own submodules is how packages expose them, not a circle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" → ".join(c) for c in cycles)


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The reader catches imports inside functions and relative ones (so the tests above can fail)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from localseek.cli import app\n    from .engine import Engine\n")
    known = {"localseek.cli", "localseek.runtime.engine", "localseek.runtime.m"}
    assert imports(src, "localseek.runtime.m", known) == {"localseek.cli", "localseek.runtime.engine"}
