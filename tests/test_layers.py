"""Imports run one way: entry points -> training -> runs -> system / export -> backbones, priors, tasks, metrics ->
diffusion -> foundations. Read from the source with ast (nothing is imported), lazy imports inside functions
included; a ``main()`` function is an entry point wherever it lives (``python -m lods.export`` reads a run)."""

import ast

import pytest

from .helpers import ROOT

# Top to bottom. A module may import its own layer and the layers below it, never one above.
LAYERS = (
    ("entry points", ("train", "lods.eval.prior_speed", "lods.eval.fullscale", "lods.eval.distill_table",
                      "lods.eval.reconstruction", "lods.bench", "lods.eval.premise", "lods.eval.fidelity",
                      "lods.eval.claims")),
    ("training", ("lods.training",)),
    ("runs", ("lods.runs",)),
    ("system and exports", ("lods.system", "lods.export")),
    ("parts", ("lods.backbones", "lods.priors", "lods.tasks", "lods.eval.clip", "lods.eval.ground_truth")),
    ("diffusion", ("lods.diffusion",)),
    ("foundations", ("lods.cameras", "lods.schedules", "lods.utils", "lods.config", "lods.stats")),
)  # fmt: skip
# Outside the layering: the toyworld (its own package, beside the layers) and the prompt lists built on it.
OUTSIDE = ("lods.toyworld", "lods.prompts", "lods.models")


def layer_of(module: str) -> int | None:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_imports(path) -> set[str]:
    """The lods modules a file imports outside its ``main()`` functions (and its ``__main__`` block)."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        is_main = isinstance(node, ast.FunctionDef) and node.name == "main"
        is_main_block = isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
        if is_main or is_main_block:
            skipped.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from lods.eval import clip`
    return {name for name in found if name == "lods" or name.startswith("lods.")}


SOURCES = sorted([ROOT / "train.py", *(ROOT / "lods").rglob("*.py")])


def test_every_module_has_a_place():
    """A new module is put in a layer (or knowingly outside them), so that the check below covers it."""
    unplaced = []
    for path in SOURCES:
        name = module_name(path)
        if layer_of(name) is None and not name.startswith(OUTSIDE) and name not in ("lods", "lods.eval"):
            unplaced.append(name)
    assert not unplaced, f"add these modules to LAYERS or OUTSIDE in {__file__}: {unplaced}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_down(path):
    name = module_name(path)
    mine = layer_of(name)
    if mine is None:
        return
    upward = []
    for imported in library_imports(path):
        theirs = layer_of(imported)
        if theirs is not None and theirs < mine:
            upward.append(f"{imported} ({LAYERS[theirs][0]})")
    assert not upward, f"{name} ({LAYERS[mine][0]}) imports modules above it: {', '.join(sorted(upward))}"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The parser finds lazy imports in functions, `from x import y` submodules, and leaves main() alone."""
    source = tmp_path / "lods" / "system.py"
    source.parent.mkdir()
    source.write_text(
        "def build():\n    from lods.training import train\n\n"
        "from lods import runs\n\n"
        "def main():\n    import lods.eval.fullscale\n"
    )
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    found = library_imports(source)
    assert {"lods.training", "lods.runs"} <= found and not any("fullscale" in name for name in found)
    assert module_name(source) == "lods.system"
    with pytest.raises(AssertionError, match=r"lods.training \(training\)"):
        test_imports_point_down(source)
