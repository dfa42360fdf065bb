"""The house style, checked as part of the tests (so .ci/run checks it): ruff's lint and format for
Python ([tool.ruff] in pyproject.toml), clang-format for C and C++ (.clang-format). Both tools come
with the test extra, pinned, since their output changes between versions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: pip install '.[test]'")
    return found


def tracked(*patterns: str) -> list[str]:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--", *patterns], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)


def test_python_is_linted_and_formatted():
    ruff = tool("ruff")
    lint = run([ruff, "check", "."])
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = run([ruff, "format", "--check", "."])
    assert fmt.returncode == 0, fmt.stdout[-4000:] + "\n(run: ruff format .)"


def test_c_and_cpp_are_formatted():
    files = tracked("csrc/*.cpp", "csrc/*.h", "fuzz/*.cpp", "fuzz/*.h", "tests/c/*.c", "examples/*.c")
    assert len(files) > 40
    out = run([tool("clang-format"), "--dry-run", "--Werror", "--style=file", *files])
    assert out.returncode == 0, out.stderr[-4000:] + "\n(run: clang-format -i --style=file <files>)"
