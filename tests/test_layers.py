"""Imports point down: every `import` in latcomp/ (module level or inside a function, relative ones resolved)
goes to its own package or to a package of a lower layer, in the order docs/ARCHITECTURE.md states.

The layer table is read from the doc itself (the ```text block under "## Layers"), so the doc and the test
cannot disagree; a package missing from the table fails too, so a new package gets a place in the doc.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "latcomp"
DOC = REPO / "docs" / "ARCHITECTURE.md"


def layer_table(text: str) -> dict[str, int]:
    """unit name -> layer number, from the first ```text block after the '## Layers' heading."""
    section = text.split("\n## Layers\n", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    layers = {}
    for line in block.splitlines():
        match = re.match(r"\s*(\d+)\s+(.+?)\s*(?:#.*)?$", line)
        if match:
            for unit in match.group(2).split():
                layers[unit] = int(match.group(1))
    return layers


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every latcomp import in the file, function-level ones included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level > len(parts):  # Python refuses it at run time: "beyond top-level package"
                    found.append((node.lineno, "(beyond latcomp)"))
                    continue
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:  # `from .. import compose` imports the module latcomp.compose
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if _is_module(target) else base))
    return [(line, target) for line, target in found
            if target in ("latcomp", "(beyond latcomp)") or target.startswith("latcomp.")]


def unit_of(module: str) -> str:
    """The layer unit: the first name under latcomp (a subpackage or a top-level module), or latcomp."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "latcomp"


def violations(layers: dict[str, int]) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = unit_of(module_name(path))
        if source not in layers:
            found.append(f"{path.relative_to(REPO)}: package {source!r} has no layer in docs/ARCHITECTURE.md")
            continue
        for line, target in imports_of(path):
            if target == "(beyond latcomp)":
                found.append(f"{path.relative_to(REPO)}:{line}: a relative import reaches above the package")
                continue
            unit = unit_of(target)
            if unit == source:
                continue
            if unit not in layers:
                found.append(f"{path.relative_to(REPO)}:{line}: {target} is in no layer of "
                             "docs/ARCHITECTURE.md")
            elif layers[unit] >= layers[source]:
                way = "sideways" if layers[unit] == layers[source] else "up"
                found.append(f"{path.relative_to(REPO)}:{line}: {source} (layer {layers[source]}) imports "
                             f"{target} (layer {layers[unit]}): {way}")
    return found


def test_imports_point_down_the_documented_layers():
    layers = layer_table(DOC.read_text())
    assert {"nets", "runtime", "service", "cli"} <= set(layers)
    problems = violations(layers)
    assert not problems, "\n".join(problems)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The walk resolves `from .. import x` and finds imports inside functions (here: in torch_engine)."""
    engine = imports_of(PACKAGE / "runtime" / "torch_engine.py")
    assert any(target.startswith("latcomp.nets.fused") for _, target in engine)
    layers = layer_table(DOC.read_text())
    assert layers["runtime"] < layers["export"] < layers["service"] < layers["studio"] < layers["cli"]
    upside_down = {**layers, "nets": layers["cli"] + 1}  # nets above everything: every user of nets breaks
    assert any("imports latcomp.nets" in problem for problem in violations(upside_down))
