"""The installed build: the extension and the native CLI link ggml-python's libraries by plain name and
find them relative to themselves, so nothing depends on the (temporary) build environment."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import minicpmv
from minicpmv import _core

PACKAGE = Path(minicpmv.__file__).resolve().parent
REPO = Path(__file__).resolve().parent.parent
BINARIES = [Path(_core.__file__).resolve(), PACKAGE / "minicpmv-cli"]


def dynamic_section(path: Path) -> str:
    return subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout


def test_package_is_the_installed_one():
    assert not PACKAGE.is_relative_to(REPO / "python"), "tests must run against the installed package"


@pytest.mark.parametrize("binary", BINARIES, ids=lambda p: p.name)
def test_ggml_is_linked_by_name_and_found_relative_to_the_package(binary):
    dyn = dynamic_section(binary)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    for lib in ("libggml.so", "libggml-base.so", "libggml-cpu.so"):
        assert lib in needed, f"{binary.name} does not link {lib} by plain name: {needed}"
    assert not any("/" in lib for lib in needed)
    runpath = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.+?)\]", dyn)
    assert runpath == ["$ORIGIN/../ggml/lib"]
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    resolved = dict(re.findall(r"^\s*(libggml\S*) => (\S+)", ldd, re.M))
    ggml_lib = (PACKAGE.parent / "ggml" / "lib").resolve()
    assert resolved and all(Path(p).resolve().parent == ggml_lib for p in resolved.values()), resolved
