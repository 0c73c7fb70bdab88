"""The library is what ``pip install .`` gives: importing it (and running its CLI) loads
none of the training, evaluation or app dependencies."""

import subprocess
import sys

import pytest

HEAVY = ("datasets", "nltk", "matplotlib", "gradio", "sqlalchemy", "accelerate", "evaluation", "train", "demo", "ray")

CHECK = """
import sys
{body}
loaded = sorted(m for m in {heavy!r} if m in sys.modules)
print("LOADED", loaded)
"""


def _loaded(body: str) -> list[str]:
    code = CHECK.format(body=body, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("LOADED"))
    return eval(line[len("LOADED "):])  # a list literal printed above


@pytest.mark.parametrize(
    "body",
    [
        "import colorizer",
        "import colorizer.metrics, colorizer.cli, colorizer.model, colorizer.images, colorizer.bins, colorizer.archive",
        "from colorizer.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0",
    ],
    ids=["import", "all-modules", "cli-help"],
)
def test_library_imports_no_training_evaluation_or_app_dependency(body):
    assert _loaded(body) == []


def test_library_colorizes_without_them(tmp_path):
    body = (
        "import numpy as np, colorizer\n"
        "out = colorizer.colorize(np.full((24, 32, 3), 120, np.uint8))\n"
        "assert out.size == (32, 24)\n"
        "assert 'transformers' in sys.modules  # the default's pretrained trunk"
    )
    # transformers (the default's DINOv2 trunk) imports accelerate itself when it is installed;
    # nothing of training, evaluation or the app comes with it
    assert [m for m in _loaded(body) if m != "accelerate"] == []
    previous = ("import numpy as np, colorizer\n"
                "out = colorizer.colorize(np.full((24, 32, 3), 120, np.uint8), model='hypercolumn-eccv16')\n"
                "assert 'transformers' not in sys.modules")
    assert _loaded(previous) == []


def test_no_import_circle_inside_the_library():
    """No module of colorizer/ imports, at the top or lazily inside a function, one that
    imports it back (directly or through others)."""
    import ast
    from pathlib import Path

    import colorizer

    root = Path(colorizer.__file__).parent
    names = {p.stem for p in root.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for name in names:
        deps = set()
        for node in ast.walk(ast.parse((root / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("colorizer."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.ImportFrom) and node.module == "colorizer":
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("colorizer."))
        graph[name] = (deps & names) - {name}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(d == goal or (d not in seen and reaches(d, goal, seen | {d})) for d in graph[start])

    circles = sorted(n for n in names if reaches(n, n, {n}))
    assert circles == [], f"modules on an import circle: {circles}"
    users = {n: deps for n, deps in graph.items() if n != "__main__"}  # the entry point runs the command line
    assert "cli" not in set().union(*users.values()), "the library imports the command line"
