"""The README's Python snippets run as written, so that they stay true.

Every ```python block of README.md is executed on its own (a fresh namespace) in a
temporary working directory that holds a small grayscale photo, ``photo.jpg``; a snippet
that raises fails its test, and every file a snippet saves must exist afterwards.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parent.parent / "README.md"
# a fence, possibly indented (inside a list), its body, and the closing fence at the same indent
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
SAVED = re.compile(r"""\.save\(\s*["']([^"']+)["']""")  # .save("name.png") in a snippet


def python_snippets(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text, dedented."""
    return [textwrap.dedent(m.group("body")) for m in FENCE.finditer(text)]


SNIPPETS = python_snippets(README.read_text(encoding="utf-8"))


def test_readme_has_python_snippets():
    assert SNIPPETS, "README.md has no ```python block"


def test_python_snippets_finds_indented_blocks():
    text = "intro\n```python\nx = 1\n```\n- item\n\n  ```python\n  y = 2\n  ```\n```bash\nls\n```\n"
    assert python_snippets(text) == ["x = 1\n", "y = 2\n"]


@pytest.fixture
def in_photo_folder(tmp_path, monkeypatch):
    """A temporary working directory holding ``photo.jpg``, a 200x200 grayscale photo."""
    from skimage import data

    photo = Image.fromarray(data.camera()).convert("L").resize((200, 200), Image.LANCZOS)
    photo.save(tmp_path / "photo.jpg", quality=90)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("index", range(len(SNIPPETS)), ids=lambda i: f"block{i + 1}")
def test_readme_snippet_runs(index, in_photo_folder):
    snippet = SNIPPETS[index]
    code = compile(snippet, f"README.md, python block {index + 1}", "exec")
    exec(code, {"__name__": "__readme__"})  # a snippet that raises fails the test
    for name in SAVED.findall(snippet):
        assert (in_photo_folder / name).is_file(), f"README.md python block {index + 1} did not write {name}"
