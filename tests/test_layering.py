"""The package layout is the architecture: lower layers never import higher ones (checked on the source)."""
import ast
import os

import pytest

REPO = os.path.join(os.path.dirname(__file__), "..")

# package -> packages it must never import (prefix match on absolute module names)
FORBIDDEN = {
    "wfvae": ("opensora",),
    "wfvae.models": ("wfvae.training", "wfvae.evaluation", "wfvae.cli"),
    "wfvae.inference": ("wfvae.training", "wfvae.evaluation", "wfvae.cli"),
    "wfvae.io": ("wfvae.training", "wfvae.evaluation", "wfvae.cli"),  # latents files record the model config
    "wfvae.training": ("wfvae.cli",),
    "wfvae.evaluation": ("wfvae.cli",),
    "opensora.models": ("opensora.pipelines", "opensora.training", "opensora.data", "opensora.cli",
                        "opensora.synthetic", "opensora.text"),
    "opensora.text": ("opensora.pipelines", "opensora.training", "opensora.data", "opensora.cli",
                      "opensora.synthetic"),
    "opensora.pipelines": ("opensora.training", "opensora.data", "opensora.cli", "opensora.synthetic"),
    "opensora.data": ("opensora.training", "opensora.cli", "opensora.synthetic"),
    "opensora.training": ("opensora.cli",),
}


def _modules():
    for package in ("wfvae", "opensora"):
        for root, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    yield rel.removesuffix(".__init__"), path


def imported(path):
    """Absolute names of every module ``path`` imports (anywhere in the file, lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the project uses absolute imports)"
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _matches(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


MODULES = sorted(_modules())


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_layers(module, path):
    bans = [ban for package, bans in FORBIDDEN.items() if _matches(module, package) for ban in bans]
    bad = sorted(n for n in imported(path) for ban in bans if _matches(n, ban))
    assert not bad, f"{module} imports {bad}"


def test_the_check_sees_violations(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from opensora.cli.sample import main\n")
    assert "opensora.cli.sample" in imported(str(bad))
