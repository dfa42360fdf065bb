"""Models by name (minicpmv.hub, `minicpmv chat --hf-repo`, `minicpmv info`): huggingface_hub against a
local server that answers as the hub does (tests/hub_server.py, HF_ENDPOINT), never the network."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hub_server import HubServer

import minicpmv
from minicpmv import hub

GREEDY = dict(sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=6)
MSGS = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def server(tiny_q4_k_m, tiny_mmproj_f16, tiny_gguf_f16):
    repos = {
        hub.DEFAULT_REPO: {hub.DEFAULT_FILE: tiny_q4_k_m, "mmproj-model-f16.gguf": tiny_mmproj_f16},
        "someone/text-only": {"ggml-model-F16.gguf": tiny_gguf_f16},
    }
    with HubServer(repos) as s:
        yield s


@pytest.fixture
def online(server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hub-cache"


def test_from_pretrained_downloads_once_then_works_offline(server, online, monkeypatch, tiny_q4_k_m, tiny_mmproj_f16):
    expected = minicpmv.Model(tiny_q4_k_m, mmproj_path=tiny_mmproj_f16).chat(MSGS, **GREEDY)
    model = minicpmv.Model.from_pretrained(cache_dir=online)  # the defaults: the published Q4_K_M pair
    assert model._model.has_vision and model.mmproj_path.endswith("mmproj-model-f16.gguf")
    assert model.chat(MSGS, **GREEDY) == expected
    assert any("/resolve/" in path and path.endswith(hub.DEFAULT_FILE) for _, path in server.requests)

    server.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = minicpmv.Model.from_pretrained(hub.DEFAULT_REPO, hub.DEFAULT_FILE, cache_dir=online)
    assert again.chat(MSGS, **GREEDY) == expected and again._model.has_vision
    assert server.requests == []  # the cache alone


def test_offline_without_the_files_is_a_clear_error(online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(minicpmv.ModelFileError, match="not in the local cache and HF_HUB_OFFLINE is set"):
        minicpmv.Model.from_pretrained(cache_dir=online)


def test_unknown_repositories_and_files_are_named(online):
    with pytest.raises(minicpmv.ModelFileError, match="no repository 'nobody/nothing'"):
        minicpmv.Model.from_pretrained("nobody/nothing", "x.gguf", cache_dir=online)
    with pytest.raises(minicpmv.ModelFileError, match="has no file 'ggml-model-Q9_K.gguf'"):
        minicpmv.Model.from_pretrained(hub.DEFAULT_REPO, "ggml-model-Q9_K.gguf", cache_dir=online)
    with pytest.raises(minicpmv.InvalidArgumentError, match="repo_id"):
        hub.download("", "x.gguf", cache_dir=online)


def test_a_repository_without_a_vision_file_gives_a_text_model(online):
    model = minicpmv.Model.from_pretrained("someone/text-only", "ggml-model-F16.gguf", cache_dir=online)
    assert not model._model.has_vision and model.mmproj_path is None
    assert model.chat(MSGS, **GREEDY)


def run_cli(args, env):
    return subprocess.run(
        [sys.executable, "-m", "minicpmv.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_the_cli_takes_models_by_name(server, tmp_path, tiny_q4_k_m, tiny_mmproj_f16):
    env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf-home"))
    env.pop("HF_HUB_OFFLINE", None)
    expected = minicpmv.Model(tiny_q4_k_m, mmproj_path=tiny_mmproj_f16).chat(MSGS, **GREEDY)
    # No -m: the published pair by default, as `ollama run minicpm-v`.
    out = run_cli(["chat", "--greedy", "-n", "6", "Name a colour."], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected + "\n"
    out = run_cli(["chat", "--hf-repo", hub.DEFAULT_REPO, "--hf-file", hub.DEFAULT_FILE, "--greedy", "-n", "6",
                   "Name a colour."], dict(env, HF_HUB_OFFLINE="1"))  # fmt: skip
    assert out.returncode == 0 and out.stdout == expected + "\n", out.stderr
    out = run_cli(["chat", "--hf-repo", "nobody/nothing", "Hi"], env)
    assert out.returncode == 2 and "no repository 'nobody/nothing'" in out.stderr and "Traceback" not in out.stderr


def test_info_describes_files_and_their_pairs(tiny_q4_k_m, tiny_mmproj_f16, tmp_path):
    out = run_cli(["info", str(tiny_q4_k_m), str(tiny_mmproj_f16)], dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "architecture 'qwen2'" in out.stdout and "layers: 3" in out.stdout and "Q4_K" in out.stdout
    assert "architecture 'clip'" in out.stdout and "resampler: 256 wide, 64 queries" in out.stdout
    assert "pairs with: a vision file (mmproj, architecture 'clip') whose resampler is 256 wide" in out.stdout
    assert "bits per weight" in out.stdout
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(40))
    for bad in (junk, tmp_path / "missing.gguf", tmp_path):
        out = run_cli(["info", str(bad)], dict(os.environ))
        assert out.returncode == 2 and "minicpmv: error:" in out.stderr and "Traceback" not in out.stderr, out.stderr
