"""The library is what ``pip install .`` gives: importing it (and running its CLI) loads
none of the training, evaluation or app dependencies."""

import subprocess
import sys

import pytest

HEAVY = ("datasets", "nltk", "matplotlib", "gradio", "sqlalchemy", "accelerate", "evaluation", "train", "demo")

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
        "import colorizer.metrics, colorizer.cli, colorizer.model, colorizer.images, colorizer.bins",
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
        "assert out.size == (32, 24)"
    )
    assert _loaded(body) == []
