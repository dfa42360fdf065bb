"""`minicpmv chat` with no prompt: a multi-turn chat on standard input (streamed answers, /image,
/reset, /save, Ctrl-C stopping an answer and not the program), driven here through pipes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from test_vision import picture

import minicpmv

GREEDY = dict(sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=6)


@pytest.fixture(scope="module")
def model(tiny_gguf_f32, tiny_mmproj_f32):
    return minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32)


def cli(tiny_gguf_f32, tiny_mmproj_f32, *extra):
    args = ["chat", "-m", str(tiny_gguf_f32), "--mmproj", str(tiny_mmproj_f32), *extra]
    return [sys.executable, "-m", "minicpmv.cli", *args]


def test_a_conversation_on_standard_input(model, tiny_gguf_f32, tiny_mmproj_f32, tmp_path):
    image = tmp_path / "p.png"
    picture(320, 240, 50).save(image)
    saved = tmp_path / "chat.json"
    lines = ["What is red?", f"/image {image}", "Describe it.", f"/save {saved}", "/reset", "Hello"]
    out = subprocess.run(cli(tiny_gguf_f32, tiny_mmproj_f32, "--greedy", "-n", "6"), input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr

    first = [{"role": "user", "content": "What is red?"}]
    a1 = model.chat(first, **GREEDY)
    second = first + [{"role": "assistant", "content": a1}, {"role": "user", "content": [image, "Describe it."]}]
    a2 = model.chat(second, **GREEDY)
    a3 = model.chat([{"role": "user", "content": "Hello"}], **GREEDY)
    assert out.stdout == f"{a1}\n{a2}\n{a3}\n"
    assert "attached p.png" in out.stderr and "new conversation" in out.stderr

    # /save wrote msgs that chat() reads back as they were.
    kept = json.loads(saved.read_text())
    assert model.chat_prompt(kept["msgs"]) == model.chat_prompt(second + [{"role": "assistant", "content": a2}])


def test_bad_commands_do_not_end_the_chat(tiny_gguf_f32, tiny_mmproj_f32, tmp_path):
    lines = ["/image /nonexistent.png", f"/save {tmp_path}/no/such/dir/x.json", "Hi"]
    out = subprocess.run(cli(tiny_gguf_f32, tiny_mmproj_f32, "--greedy", "-n", "3"), input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "no image file" in out.stderr and "cannot save" in out.stderr
    assert out.stdout.count("\n") == 1  # the one answer


def test_ctrl_c_stops_the_answer_not_the_chat(tiny_gguf_f32, tiny_mmproj_f32):
    proc = subprocess.Popen(cli(tiny_gguf_f32, tiny_mmproj_f32, "-n", "100000", "--seed", "1"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        proc.stdin.write(b"Tell me a very long story.\n")
        proc.stdin.flush()
        received, deadline = b"", time.monotonic() + 120
        while len(received) < 20 and time.monotonic() < deadline:  # the answer is streaming
            if select.select([proc.stdout], [], [], 1.0)[0]:
                received += os.read(proc.stdout.fileno(), 4096)
        assert len(received) >= 20, "no streamed answer"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.stdin.write(b"/quit\n")
        proc.stdin.flush()
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"[stopped]" in received + rest
