"""The C API as an app sees it: the project is configured, built and installed with plain CMake
(against ggml-python's libraries, no Python module), then examples/ and tests/c/ are built against
the installed package with find_package(minicpmv). The example's greedy answers must equal the Python
binding's; the C test program drives every misuse case of minicpmv.h from plain C99."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minicpmv

REPO = Path(__file__).resolve().parent.parent
MAX_NEW_TOKENS = 16
QUESTIONS = ["What is in the image?", "And what colours does it have?"]


def _cmake() -> str:
    found = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("cmake is not installed")
    return found


def _exec(cmd: list, text: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=text, **kwargs)


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    proc = _exec(cmd, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def _generator() -> list[str]:
    ninja = shutil.which("ninja") or shutil.which("ninja", path=str(Path(sys.executable).parent))
    return ["-G", "Ninja"] if ninja else []


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """Configure, build (Release, 2 jobs) and install the project into a temporary prefix."""
    cmake = _cmake()
    root = tmp_path_factory.mktemp("c_api")
    build, prefix = root / "build", root / "prefix"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    options = ["-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}", "-DMINICPMV_BUILD_PYTHON=OFF"]
    options += ["-DMINICPMV_BUILD_CLI=OFF", "-DMINICPMV_BUILD_C_API=ON"]
    _run([cmake, "-S", REPO, "-B", build, *_generator(), *options], env=env)
    _run([cmake, "--build", build, "--parallel", "2"], env=env)
    _run([cmake, "--install", build, "--prefix", prefix], env=env)
    print(f"\nC API: configured, built and installed in {time.perf_counter() - t0:.1f} s")
    return prefix


def _build_app(installed: Path, source: Path, tmp_path_factory, name: str) -> Path:
    cmake = _cmake()
    build = tmp_path_factory.mktemp(name)
    options = ["-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={installed}"]
    _run([cmake, "-S", source, "-B", build, *_generator(), *options])
    _run([cmake, "--build", build, "--parallel", "2"])
    return build


@pytest.fixture(scope="session")
def example(installed, tmp_path_factory) -> Path:
    return _build_app(installed, REPO / "examples", tmp_path_factory, "examples") / "chat_image"


@pytest.fixture(scope="session")
def misuse_program(installed, tmp_path_factory) -> Path:
    return _build_app(installed, REPO / "tests" / "c", tmp_path_factory, "c_tests") / "test_c_api_misuse"


def test_install_layout(installed):
    assert (installed / "include" / "minicpmv.h").is_file()
    config_dirs = list(installed.glob("lib*/cmake/minicpmv"))
    assert len(config_dirs) == 1, config_dirs
    for name in ("minicpmvConfig.cmake", "minicpmvConfigVersion.cmake", "minicpmvTargets.cmake"):
        assert (config_dirs[0] / name).is_file(), name
    libs = list(installed.glob("lib*/libminicpmv.so"))
    assert len(libs) == 1, libs
    # Only the C API is exported: the C++ core and ggml stay inside.
    nm = _run(["nm", "-D", "--defined-only", libs[0]]).stdout
    exported = {line.split()[-1] for line in nm.splitlines() if line.strip()}
    assert exported and all(name.startswith("minicpmv_") for name in exported), sorted(exported)[:20]
    header = (installed / "include" / "minicpmv.h").read_text()
    for fn in re.findall(r"\b(minicpmv_\w+)\(", header):
        if not fn.endswith("_callback"):
            assert fn in exported, f"{fn} is declared but not exported"


def _image() -> np.ndarray:
    return (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)


def _python_answers(llm: Path, mmproj: Path, image: np.ndarray) -> list[str]:
    model = minicpmv.Model(llm, mmproj_path=mmproj)
    msgs: list[dict] = []
    answers = []
    for i, question in enumerate(QUESTIONS):
        msgs.append({"role": "user", "content": [image, question] if i == 0 else question})
        answer = model.chat(msgs, sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=MAX_NEW_TOKENS)
        msgs.append({"role": "assistant", "content": answer})
        answers.append(answer)
    return answers


def _run_example(example: Path, llm: Path, mmproj: Path, image_args: list, questions: list[str]):
    t0 = time.perf_counter()
    proc = _exec([example, "-m", llm, "--mmproj", mmproj, *image_args, "-n", MAX_NEW_TOKENS, *questions], text=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    print(f"\nchat_image ({len(questions)} turns): {time.perf_counter() - t0:.1f} s")
    return proc.stdout.decode("utf-8", errors="replace"), proc.stderr.decode(errors="replace")


def test_example_answers_as_the_python_binding(example, tiny_gguf_f32, tiny_mmproj_f32, tmp_path):
    image = _image()
    ppm = tmp_path / "image.ppm"
    ppm.write_bytes(b"P6\n# a comment\n%d %d\n255\n" % (image.shape[1], image.shape[0]) + image.tobytes())
    expected = _python_answers(tiny_gguf_f32, tiny_mmproj_f32, image)
    assert all(expected), expected

    out, err = _run_example(example, tiny_gguf_f32, tiny_mmproj_f32, ["--image", ppm], QUESTIONS[:1])
    assert out == expected[0] + "\n"

    # The second question is a new turn of the same conversation: it reuses the cache (the image
    # is not encoded again) and answers as Python's chat() does with the first answer in msgs.
    raw = tmp_path / "image.rgb"
    raw.write_bytes(image.tobytes())
    out, err = _run_example(
        example, tiny_gguf_f32, tiny_mmproj_f32, ["--raw-rgb", image.shape[1], image.shape[0], raw], QUESTIONS
    )
    assert out == expected[0] + "\n" + expected[1] + "\n"
    turn2 = re.search(r"turn 2: n_prompt=(\d+) n_reused=(\d+) n_encoded=(\d+)", err)
    assert turn2 and int(turn2.group(2)) > 0 and int(turn2.group(3)) == 0, err


def test_example_reports_bad_input(example, tiny_gguf_f32, tiny_mmproj_f32, tmp_path):
    raw = tmp_path / "short.rgb"
    raw.write_bytes(bytes(100))
    model = [example, "-m", tiny_gguf_f32, "--mmproj", tiny_mmproj_f32]
    proc = _exec([*model, "--raw-rgb", 64, 48, raw, "Hi"])
    assert proc.returncode == 1
    assert "needs 9216 bytes, size says 100" in proc.stderr and "(invalid argument)" in proc.stderr
    proc = _exec([*model, "--device", "nosuchbackend", "--raw-rgb", 64, 48, raw, "Hi"])
    assert proc.returncode == 1
    assert "device 'nosuchbackend' is not available in this build (available: " in proc.stderr, proc.stderr
    assert "(unsupported)" in proc.stderr


def test_misuse_from_c(misuse_program, tiny_gguf_f32, tiny_mmproj_f32):
    t0 = time.perf_counter()
    proc = _exec([misuse_program, tiny_gguf_f32, tiny_mmproj_f32])
    print(f"\ntest_c_api_misuse: {time.perf_counter() - t0:.1f} s")
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert proc.returncode == 0 and not failed, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("0 failed")
    assert proc.stdout.count("\nok ") >= 60


def test_two_conversations_on_two_threads_from_c(misuse_program, tiny_gguf_f32, tiny_mmproj_f32):
    # Built with the misuse program (tests/c/CMakeLists.txt).
    proc = _exec([misuse_program.parent / "test_c_api_threads", tiny_gguf_f32, tiny_mmproj_f32])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("threads: same replies")
