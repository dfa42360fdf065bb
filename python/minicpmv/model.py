"""The user-facing model: HF MiniCPM-V 2.6 ``chat()`` semantics on the native core.

Defaults come from the C++ parameter structs (``_core.default_*``), so each lives in one place.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import pathlib
import queue
import threading
from typing import Iterator, Sequence

import numpy as np

from . import _core



def _shortest(params: dict) -> dict:
    # The core stores float32: show 0.7, not 0.699999988 (both convert back to the same float32).
    return {k: float(f"{v:.7g}") if isinstance(v, float) else v for k, v in params.items()}


_SAMPLING = _shortest(_core.default_sampling_params())  # HF chat(sampling=True)
_BEAMS = _shortest(_core.default_beam_search_params())  # HF chat(sampling=False)
_SESSION = _core.default_session_params()
_MAX_SLICE_NUMS = 9  # HF MiniCPMVImageProcessor's default
# chat()'s keyword arguments past HF's named ones: its generation options, and ours.
_CHAT_OPTIONS = {"temperature", "top_p", "top_k", "min_p", "repetition_penalty", "num_beams", "length_penalty",
                 "do_sample", "seed"}  # fmt: skip


def _as_rgb(part, where: str):
    """An image part as an HxWx3 uint8 array: PIL images in any mode are converted to RGB as HF's
    chat() does; numpy arrays (HxW, HxWx3, HxWx4) go through PIL the same way; bytes and paths are
    opened with PIL."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(part, (bytes, bytearray, os.PathLike)):
        try:
            part = Image.open(io.BytesIO(part) if isinstance(part, (bytes, bytearray)) else part)
            part.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise _core.InvalidArgumentError(f"{where}: not a readable image ({exc})") from None
    if isinstance(part, np.ndarray):
        if part.dtype != np.uint8 or part.ndim not in (2, 3) or (part.ndim == 3 and part.shape[2] not in (1, 3, 4)):
            raise _core.InvalidArgumentError(
                f"{where}: an image array must be uint8 HxW, HxWx3 or HxWx4, got {part.dtype} {part.shape}"
            )
        if part.ndim == 3 and part.shape[2] == 3:
            return np.ascontiguousarray(part)
        part = Image.fromarray(part[:, :, 0] if part.ndim == 3 and part.shape[2] == 1 else part)
    if isinstance(part, Image.Image):
        if part.width < 1 or part.height < 1:
            raise _core.InvalidArgumentError(f"{where}: the image is empty ({part.width}x{part.height})")
        return np.asarray(part.convert("RGB"))
    raise _core.InvalidArgumentError(
        f"{where}: content items must be str, images or {{'type': 'text' | 'image_url' | 'image', ...}} dicts, "
        f"got {type(part).__name__}"
    )


def _image_from_url(url, where: str):
    """An OpenAI ``image_url``: a ``data:image/...;base64,`` URL or a local path / ``file://`` URL.
    Remote URLs are refused: the library never reaches the network on a message's behalf."""
    if not isinstance(url, str):
        raise _core.InvalidArgumentError(f"{where}: image_url must be a string or {{'url': str}}, got {type(url).__name__}")
    if url.startswith("data:"):
        header, comma, payload = url[5:].partition(",")
        if not comma or not header.endswith(";base64"):
            raise _core.InvalidArgumentError(f"{where}: a data URL must be 'data:image/<type>;base64,<data>'")
        media_type = header[: -len(";base64")]
        if not media_type.startswith("image/"):
            raise _core.InvalidArgumentError(f"{where}: the data URL holds {media_type or 'no media type'}, not an image")
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise _core.InvalidArgumentError(f"{where}: the data URL's base64 is broken ({exc})") from None
        return _as_rgb(data, where)
    if url.startswith(("http://", "https://")):
        raise _core.UnsupportedError(
            f"{where}: remote image URLs are not fetched; download the image, or pass it as a data: URL or a local path"
        )
    return _as_rgb(pathlib.Path(url[len("file://") :] if url.startswith("file://") else url), where)


def _content_part(part, where: str):
    """A text (str) or an image (HxWx3 uint8) from one item of a message's content list."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return _as_rgb(part, where)
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise _core.InvalidArgumentError(f"{where}: a text part needs a string 'text'")
        return part["text"]
    if kind == "image_url":
        url = part.get("image_url")
        return _image_from_url(url.get("url") if isinstance(url, dict) else url, where)
    if kind == "image":  # transformers' chat-template form: the image itself, or a url / path
        for key in ("image", "url", "path"):
            if key in part:
                return _as_rgb(part[key], where) if key == "image" else _image_from_url(os.fspath(part[key]), where)
        raise _core.InvalidArgumentError(f"{where}: an image part needs 'image', 'url' or 'path'")
    raise _core.InvalidArgumentError(f"{where}: unknown content part type {kind!r} (expected 'text', 'image_url' or 'image')")


def _turns_from_msgs(msgs, image, system_prompt: str) -> list[tuple[str, list]]:
    """HF chat()'s message checks (spec §7): user/assistant turns, the first from the user, content a
    string or a list of strings, images and OpenAI-style parts; a non-empty system_prompt, or an
    OpenAI-style leading system message, becomes a system turn."""
    if isinstance(msgs, dict) or not isinstance(msgs, Sequence) or isinstance(msgs, (str, bytes)):
        raise _core.InvalidArgumentError("msgs must be a list of {'role': ..., 'content': ...} dicts")
    if not isinstance(system_prompt, str):
        raise _core.InvalidArgumentError(f"system_prompt must be a string, got {type(system_prompt).__name__}")
    if len(msgs) > 0 and isinstance(msgs[0], dict) and msgs[0].get("role") == "system":
        if system_prompt:
            raise _core.InvalidArgumentError("give the system prompt once: as system_prompt= or as msgs[0], not both")
        system = msgs[0].get("content")
        parts = [system] if isinstance(system, str) else system if isinstance(system, (list, tuple)) else None
        texts = [_content_part(p, "msgs[0]") for p in parts] if parts is not None else []
        if parts is None or not all(isinstance(t, str) for t in texts):
            raise _core.InvalidArgumentError("msgs[0]: a system message's content must be text")
        system_prompt, msgs, first = "\n".join(texts), msgs[1:], 1
    else:
        first = 0
    if len(msgs) == 0:
        raise _core.InvalidArgumentError("msgs is empty: give at least one user message")
    turns = []
    for i, msg in enumerate(msgs, start=first):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise _core.InvalidArgumentError(f"msgs[{i}] must be a dict with 'role' and 'content'")
        role = msg["role"]
        if role not in ("user", "assistant"):
            raise _core.InvalidArgumentError(f"msgs[{i}]: unknown role {role!r} (expected 'user' or 'assistant')")
        if i == first and role != "user":
            raise _core.InvalidArgumentError(f"msgs[{i}]: the first message must come from the user")
        content = msg["content"]
        if i == first and image is not None and isinstance(content, str):
            content = [image, content]
        if not isinstance(content, (str, list, tuple)):
            raise _core.InvalidArgumentError(
                f"msgs[{i}]: content must be a string or a list of parts, got {type(content).__name__}"
            )
        parts = [content] if isinstance(content, str) else content
        turns.append((role, [_content_part(p, f"msgs[{i}] item {j}") for j, p in enumerate(parts)]))
    if system_prompt:
        turns.insert(0, ("system", [system_prompt]))
    return turns


class Model:
    """A MiniCPM-V 2.6 model loaded from GGUF.

    ``Model("ggml-model-Q4_K_M.gguf")`` loads the language model; the conversation state (KV cache)
    lives in the object, so successive ``chat()`` calls that extend the same conversation reuse it.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        mmproj_path: str | os.PathLike | None = None,
        n_ctx: int = _SESSION["n_ctx"],
        n_threads: int | None = None,
        n_batch: int = _SESSION["n_batch"],
        device: str = _core.default_device(),
        kv_cache_type: str = _SESSION["kv_cache_type"],
        cpu_repack: bool = False,
        use_mmap: bool = True,
    ):
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch)):
            if not isinstance(value, int) or value < 1:
                raise _core.InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise _core.InvalidArgumentError(f"n_threads must be a positive integer or None, got {n_threads!r}")
        self.model_path = os.fspath(model_path)
        self.mmproj_path = None if mmproj_path is None else os.fspath(mmproj_path)
        # cpu_repack: quantized weights in ggml's CPU_REPACK layout (an opt-in extra buffer type).
        # use_mmap=False: weights copied into memory instead of used from the file mapping (on the
        # CPU ~10 % faster decoding, slower loading), as llama.cpp's --no-mmap.
        self._model = _core.Model(self.model_path, self.mmproj_path or "", device, bool(cpu_repack), bool(use_mmap))
        self._session = _core.Session(
            self._model, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads or 0, kv_cache_type=kv_cache_type
        )
        self._lock = threading.Lock()
        # The core's report on the latest chat(): tokens, stop reason, prompt positions reused from
        # the cache, image slices encoded, timings.
        self.last_result: dict | None = None

    # --- tokens ------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        return self._model.config

    @property
    def n_ctx(self) -> int:
        return self._session.n_ctx

    def tokenize(self, text: str, parse_special: bool = False) -> list[int]:
        return self._model.tokenizer.encode(text, parse_special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._model.tokenizer.decode(list(ids))

    def chat_prompt(self, msgs, system_prompt: str = "", image=None, max_slice_nums=None, use_image_id=None) -> list[int]:
        """The prompt ids chat() would evaluate for ``msgs`` (ChatML, spec §7); image embedding
        positions hold the <unk> id, as in HF."""
        return self._prompt(msgs, system_prompt, image, max_slice_nums, use_image_id).tokens

    def _prompt(self, msgs, system_prompt, image, max_slice_nums, use_image_id) -> _core.Prompt:
        max_slice_nums = _MAX_SLICE_NUMS if max_slice_nums is None else max_slice_nums
        if not isinstance(max_slice_nums, int) or max_slice_nums < 1:
            raise _core.InvalidArgumentError(f"max_slice_nums must be a positive integer, got {max_slice_nums!r}")
        turns = _turns_from_msgs(msgs, image, system_prompt)
        return self._model.chat_prompt(
            turns, True, True if use_image_id is None else bool(use_image_id), max_slice_nums
        )

    def encode_slices(self, slices):
        """Resampler outputs [n, n_query·embed] for normalised float32 [3, H, W] slices (all in one
        batch); for tools and tests."""
        with self._lock:
            return self._session.encode_slices(list(slices))

    def eval(self, ids: Sequence[int], all_logits: bool = False):
        """Appends ``ids`` to the conversation and returns logits (last position, or all)."""
        with self._lock:
            return self._session.eval(list(ids), all_logits)

    def reset(self) -> None:
        """Forgets the cached conversation."""
        with self._lock:
            self._session.truncate(0)

    # --- chat --------------------------------------------------------------------------------
    def chat(
        self,
        msgs=None,
        image=None,
        tokenizer=None,
        processor=None,
        vision_hidden_states=None,
        max_new_tokens: int = 2048,
        min_new_tokens: int = 0,
        sampling: bool = True,
        max_inp_length: int | None = None,
        system_prompt: str = "",
        stream: bool = False,
        max_slice_nums: int | None = None,
        use_image_id: bool | None = None,
        **kwargs,
    ) -> str | Iterator[str]:
        """Answers the conversation ``msgs`` like HF ``model.chat(image=None, msgs=msgs, tokenizer=tokenizer)``.

        ``sampling=True`` samples (temperature 0.7, top_p 0.8, top_k 100, repetition_penalty 1.05;
        ``do_sample=False`` makes it greedy, as in HF); ``sampling=False`` is beam search (num_beams 3,
        repetition_penalty 1.2), and with ``num_beams=1, repetition_penalty=1.0`` plain greedy
        decoding. Keyword arguments: ``temperature``, ``top_p``, ``top_k``, ``min_p``,
        ``repetition_penalty``, ``num_beams``, ``length_penalty``, ``do_sample``, ``seed``; anything
        else is refused by name. ``stream=True`` returns a generator of text pieces. ``tokenizer`` and
        ``processor`` are accepted for HF call compatibility and not used (the GGUF file carries the
        tokenizer). Content: strings, images (PIL images, HxWx3 uint8 arrays, encoded bytes, paths)
        and OpenAI-style parts (``{"type": "text", "text": ...}``, ``{"type": "image_url",
        "image_url": {"url": "data:image/png;base64,..."}}``). ``max_slice_nums`` (default 9) and
        ``use_image_id`` (default True; False for video frames) are HF's. ``max_inp_length``: refuse
        prompts longer than this many tokens (HF would cut them).
        """
        del tokenizer, processor  # HF's chat() needs them; the GGUF file carries both
        if msgs is None:
            raise _core.InvalidArgumentError("chat() needs msgs: a list of {'role': ..., 'content': ...} dicts")
        unknown = sorted(set(kwargs) - _CHAT_OPTIONS)
        if unknown:
            raise _core.InvalidArgumentError(
                f"unknown chat() argument(s): {', '.join(unknown)} (known: {', '.join(sorted(_CHAT_OPTIONS))})"
            )
        if vision_hidden_states is not None:
            raise _core.UnsupportedError("vision_hidden_states is not supported: pass the images in msgs")
        if min_new_tokens != 0:
            raise _core.UnsupportedError("min_new_tokens is not supported (only 0, HF's default)")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise _core.InvalidArgumentError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        options = {**(_SAMPLING if sampling else _BEAMS), **kwargs}
        greedy = sampling and options.get("do_sample") is False  # HF: do_sample=False under sampling=True
        num_beams = options.get("num_beams", _BEAMS["num_beams"])
        if stream and not sampling and num_beams > 1:
            raise _core.InvalidArgumentError("stream=True cannot be used with beam search: use sampling=True or num_beams=1")
        seed = kwargs.get("seed")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        prompt = self._prompt(msgs, system_prompt, image, max_slice_nums, use_image_id)
        if max_inp_length is not None and len(prompt) > max_inp_length:
            raise _core.InvalidArgumentError(f"the prompt has {len(prompt)} tokens, more than max_inp_length={max_inp_length}")
        args = dict(
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            beam_search=not sampling,
            temperature=0.0 if greedy else options.get("temperature", _SAMPLING["temperature"]),
            top_k=options.get("top_k", _SAMPLING["top_k"]),
            top_p=options.get("top_p", _SAMPLING["top_p"]),
            min_p=options.get("min_p", _SAMPLING["min_p"]),
            repetition_penalty=options["repetition_penalty"],
            seed=seed,
            num_beams=num_beams,
            length_penalty=options.get("length_penalty", _BEAMS["length_penalty"]),
        )
        if not stream:
            with self._lock:
                self.last_result = self._session.generate(**args)
                return self.last_result["text"]
        return self._stream(args)

    def generate(self, prompt: Sequence[int], **kwargs) -> dict:
        """Low level: runs the prompt ids as given and returns the core's result dict (tokens, text,
        stop_reason, timings). Keyword arguments as chat(); defaults are HF's sampling ones."""
        args = dict(
            max_new_tokens=2048, beam_search=False, temperature=_SAMPLING["temperature"], top_k=_SAMPLING["top_k"],
            top_p=_SAMPLING["top_p"], min_p=_SAMPLING["min_p"], repetition_penalty=_SAMPLING["repetition_penalty"],
            seed=0, num_beams=_BEAMS["num_beams"], length_penalty=_BEAMS["length_penalty"],
        )
        unknown = set(kwargs) - set(args)
        if unknown:
            raise _core.InvalidArgumentError(f"unknown generate() arguments: {sorted(unknown)}")
        args.update(kwargs)
        with self._lock:
            return self._session.generate(_core.Prompt(list(prompt)), **args)

    def _stream(self, args: dict) -> Iterator[str]:
        # The core runs in a thread (GIL released) and hands pieces over a queue; closing the
        # generator early cancels the generation at the next token.
        pieces: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        done = object()

        def on_piece(piece: bytes) -> bool:
            pieces.put(piece.decode("utf-8", errors="replace"))
            return not cancelled.is_set()

        def run():
            try:
                with self._lock:
                    self.last_result = self._session.generate(**args, on_piece=on_piece)
            except BaseException as exc:  # handed to the consumer, raised there
                pieces.put(exc)
            finally:
                pieces.put(done)

        def consume():
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            try:
                while True:
                    item = pieces.get()
                    if item is done:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancelled.set()
                worker.join()

        return consume()
