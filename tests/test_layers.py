"""Imports point down: pure modules, then I/O, then the IPython glue (DESIGN.md, "Layering").

Every module of the package must be listed in exactly one layer, so a new module is placed
on purpose. Every import is checked, also those inside functions (the lazy ones).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "replicate_magic"

# No I/O, no IPython, no aiohttp: text in, values out.
PURE = {"structured", "sse", "prompts", "inputs", "errors", "conversation", "options", "prompt_template", "catalog",
        "render", "terminal", "textparts", "environment", "answers", "settings", "request", "prediction",
        "schemas", "pricing", "outputs", "attachments", "each", "context", "templates",
        "errors_context", "reply_code", "option_rules"}
# The network and the private loop; no IPython.
IO = {"compare", "sessions", "client", "streaming", "provider", "chat", "loop", "cancels", "bodies", "journal", "store", "files", "limiter", "batch", "model_lookup", "store_layout", "store_rows",
      "uploads"}
# IPython and widgets on top.
GLUE = {"compare_view", "magics", "subcommands", "display", "panel_model", "panel", "__main__", "demo", "__init__", "traits", "warm_up", "batch_view", "api", "cell_turn",
        "notebook_context"}
LAYERS = [PURE, IO, GLUE]

# Third-party or standard modules a layer must not import.
_NETWORK = {"aiohttp", "socket", "http", "urllib.request", "sqlite3", "ssl"}
_IPYTHON = {"IPython", "ipykernel", "ipywidgets", "traitlets"}
FORBIDDEN = {
    "pure": _NETWORK | _IPYTHON,
    "io": _IPYTHON,
}
# options builds its parser with IPython's magic_arguments, as %%replicate? shows it.
ALLOWED = {("options", "IPython")}


def modules() -> list[str]:
    return sorted(path.stem for path in PACKAGE.glob("*.py"))


def layer_of(module: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if module in layer)


def imports(source: str) -> list[tuple[str, int]]:
    """(what, line) for every import in the source: ``.name`` for our own, dotted names for others."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y, or from . import y
                targets = [node.module] if node.module else [alias.name for alias in node.names]
                found += [("." + target.split(".")[0], node.lineno) for target in targets]
            elif node.module:
                found.append((node.module, node.lineno))
    return found


def problems(module: str, source: str) -> list[str]:
    """The imports of ``module`` (with this source) that break the layering."""
    own = layer_of(module)
    name = ("pure", "io", "glue")[own]
    wrong = []
    for target, line in imports(source):
        if target.startswith("."):
            other = target[1:]
            if other == "emulator":
                if name != "glue":
                    wrong.append(f"line {line}: the emulator, from the {name} layer")
            elif layer_of(other) > own:
                wrong.append(f"line {line}: {other} is above {module}")
        elif (module, target.split(".")[0]) not in ALLOWED:
            for banned in FORBIDDEN.get(name, ()):
                if target == banned or target.startswith(banned + "."):
                    wrong.append(f"line {line}: {target}, in the {name} layer")
    return wrong


def test_every_module_has_one_layer() -> None:
    placed = [m for layer in LAYERS for m in layer]
    assert len(placed) == len(set(placed)), "a module is in two layers"
    assert set(modules()) == set(placed), (
        f"unplaced: {set(modules()) - set(placed)}; listed but missing: {set(placed) - set(modules())}")


@pytest.mark.parametrize("module", modules())
def test_imports_point_down(module: str) -> None:
    assert problems(module, (PACKAGE / f"{module}.py").read_text(encoding="utf-8")) == []


def test_the_emulator_stands_apart() -> None:
    """It speaks Replicate's API from its own code: nothing of the client side, so it cannot
    agree with the client by sharing its mistakes."""
    wrong = []
    for path in sorted((PACKAGE / "emulator").glob("*.py")):
        for target, line in imports(path.read_text(encoding="utf-8")):
            if target.startswith("replicate_magic") and not target.startswith("replicate_magic.emulator"):
                wrong.append(f"{path.name}:{line}: {target}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        wrong += [f"{path.name}:{node.lineno}: relative import out of the emulator" for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.level > 1]
    assert wrong == []


def test_the_check_sees_upward_and_forbidden_imports_even_inside_functions() -> None:
    assert problems("render", "def f():\n    from .magics import ReplicateMagics\n") == [
        "line 2: magics is above render"]
    assert problems("chat", "import IPython.display") == ["line 1: IPython.display, in the io layer"]
    assert problems("sse", "from aiohttp import web") == ["line 1: aiohttp, in the pure layer"]
    assert problems("magics", "from .render import markdown_html\nimport IPython") == []



def _declared(extra: str | None = None) -> set[str]:
    """Distribution names pyproject.toml declares (its dependencies, or one extra's), normalised."""
    text = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    section = "dependencies = [" if extra is None else f"{extra} = ["
    body = text[text.index(section) + len(section):].split("]", 1)[0]
    names = re.findall(r'"([A-Za-z0-9_.-]+)', body)
    return {name.lower().replace("_", "-") for name in names}


@pytest.mark.parametrize("module, extra", [(m, "demo" if m == "demo" else None) for m in modules()]
                         + [(f"emulator/{p.stem}", None) for p in sorted((PACKAGE / "emulator").glob("*.py"))])
def test_every_package_the_code_imports_is_declared(module: str, extra: str | None) -> None:
    """An import that only a test extra happens to install would break a user's install."""
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    declared = _declared() | (_declared(extra) if extra else set())
    missing = []
    for target, line in imports((PACKAGE / f"{module}.py").read_text(encoding="utf-8")):
        top = target.split(".")[0]
        if target.startswith(".") or top in sys.stdlib_module_names or top in ("replicate_magic", "__future__"):
            continue
        names = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
        if not names & declared:
            missing.append(f"line {line}: {target} (from {', '.join(sorted(names))})")
    assert missing == []
