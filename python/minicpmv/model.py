"""The user-facing model: HF MiniCPM-V 2.6 ``chat()`` semantics on the native core.

Defaults come from the C++ parameter structs (``_core.default_*``), so each lives in one place.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import pathlib
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import _core

_MODEL = _core.ModelParams()
_SESSION = _core.SessionParams()
_GENERATE = _core.GenerateParams()  # HF chat(sampling=True); .beam: HF chat(sampling=False)
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
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
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


def data_url(url: str, where: str) -> tuple[str, bytes]:
    """(media type, payload) of a ``data:<media type>;base64,<data>`` URL."""
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma or not header.endswith(";base64"):
        raise _core.InvalidArgumentError(f"{where}: a data URL must be 'data:<media type>;base64,<data>'")
    try:
        return header[: -len(";base64")], base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _core.InvalidArgumentError(f"{where}: the data URL's base64 is broken ({exc})") from None


def _image_from_url(url, where: str):
    """An OpenAI ``image_url``: a ``data:image/...;base64,`` URL or a local path / ``file://`` URL.
    Remote URLs are refused: the library never reaches the network on a message's behalf."""
    if not isinstance(url, str):
        raise _core.InvalidArgumentError(
            f"{where}: image_url must be a string or {{'url': str}}, got {type(url).__name__}"
        )
    if url.startswith("data:"):
        media_type, data = data_url(url, where)
        if not media_type.startswith("image/"):
            raise _core.InvalidArgumentError(
                f"{where}: the data URL holds {media_type or 'no media type'}, not an image"
            )
        return _as_rgb(data, where)
    if url.startswith(("http://", "https://")):
        raise _core.UnsupportedError(
            f"{where}: remote image URLs are not fetched; download the image, or pass it as a data: URL or a local path"
        )
    return _as_rgb(pathlib.Path(url[len("file://") :] if url.startswith("file://") else url), where)


def _utf8(text: str, where: str) -> str:
    """`text`, refused when it cannot be UTF-8 (lone surrogates), the core's text encoding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _core.InvalidArgumentError(
            f"{where}: the text is not valid Unicode ({exc.reason} at {exc.start})"
        ) from None
    return text


def _content_part(part, where: str):
    """A text (str) or an image (HxWx3 uint8) from one item of a message's content list."""
    if isinstance(part, str):
        return _utf8(part, where)
    if not isinstance(part, dict):
        return _as_rgb(part, where)
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise _core.InvalidArgumentError(f"{where}: a text part needs a string 'text'")
        return _utf8(part["text"], where)
    if kind == "image_url":
        url = part.get("image_url")
        return _image_from_url(url.get("url") if isinstance(url, dict) else url, where)
    if kind == "image":  # transformers' chat-template form: the image itself, or a url / path
        for key in ("image", "url", "path"):
            if key in part:
                return _as_rgb(part[key], where) if key == "image" else _image_from_url(os.fspath(part[key]), where)
        raise _core.InvalidArgumentError(f"{where}: an image part needs 'image', 'url' or 'path'")
    raise _core.InvalidArgumentError(
        f"{where}: unknown content part type {kind!r} (expected 'text', 'image_url', 'image' or 'video')"
    )


def _turns_from_msgs(msgs, image, system_prompt: str) -> tuple[list[tuple[str, list]], bool]:
    """HF chat()'s message checks (docs/model.md §7): user/assistant turns, the first from the user,
    content a string or a list of strings, images and OpenAI-style parts; a non-empty system_prompt,
    or an OpenAI-style leading system message, becomes a system turn. Also whether some part is a
    video ({"type": "video", "video": path or frames}): the core then lays frames out as the model
    card does unless max_slice_nums / use_image_id say otherwise."""
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
    turns, video = [], False
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
        parts = []
        for j, part in enumerate([content] if isinstance(content, str) else content):
            if isinstance(part, dict) and part.get("type") == "video":
                parts += _video_frames(part.get("video"), f"msgs[{i}] item {j}")
                video = True
            else:
                parts.append(_content_part(part, f"msgs[{i}] item {j}"))
        turns.append((role, parts))
    if system_prompt:
        turns.insert(0, ("system", [_utf8(system_prompt, "system_prompt")]))
    return turns, video


def _video_frames(frames, where: str) -> list:
    """A video part's frames: a file (sampled as the model card does, video.load_frames) or images."""
    if isinstance(frames, (str, os.PathLike)):
        from .video import load_frames

        try:
            frames = load_frames(frames)
        except (OSError, ValueError) as exc:
            raise _core.InvalidArgumentError(f"{where}: not a readable video ({exc})") from None
    if not isinstance(frames, (list, tuple)) or not frames:
        raise _core.InvalidArgumentError(
            f"{where}: a video part needs 'video': a file path or a non-empty list of frames"
        )
    return [_as_rgb(frame, f"{where} frame {k}") for k, frame in enumerate(frames)]


def _generate_params(sampling: bool, max_new_tokens, options: dict) -> _core.GenerateParams:
    """The core's parameters for HF chat(sampling=..., **options): the sampling or beam-search
    defaults, overridden by the options given (HF ignores those of the other mode, so does this)."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or not 0 <= max_new_tokens < 2**31:
        raise _core.InvalidArgumentError(
            f"max_new_tokens must be a non-negative integer below 2**31, got {max_new_tokens!r}"
        )
    p = _core.GenerateParams()
    p.max_new_tokens = max_new_tokens
    p.beam_search = not sampling
    seed = options.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64):
        raise _core.InvalidArgumentError(f"seed must be an integer from 0 to 2**64 - 1, got {seed!r}")
    p.sampling.seed = int.from_bytes(os.urandom(8), "little") if seed is None else seed
    if sampling:
        _set_options(p.sampling, ("temperature", "top_k", "top_p", "min_p", "repetition_penalty"), options)
        if options.get("do_sample") is False:  # HF: greedy search under sampling=True
            p.sampling.temperature = 0.0
    else:
        _set_options(p.beam, ("num_beams", "repetition_penalty", "length_penalty"), options)
    return p


def _set_options(params, names, options: dict) -> None:
    """The options given (None: the default) onto the core's struct, wrong types refused by name."""
    for name in names:
        value = options.get(name)
        if value is None:
            continue
        try:
            setattr(params, name, value)
        except TypeError:
            kind = "an integer" if isinstance(getattr(params, name), int) else "a number"
            raise _core.InvalidArgumentError(f"{name} must be {kind}, got {value!r}") from None


def _chat_options(max_slice_nums, use_image_id) -> _core.ChatOptions:
    """None leaves the choice to the core: HF's defaults (9 slices, image ids on), or the model card's
    video settings for a conversation of video frames."""
    o = _core.ChatOptions()
    if max_slice_nums is not None:
        if not isinstance(max_slice_nums, int) or isinstance(max_slice_nums, bool) or max_slice_nums < 1:
            raise _core.InvalidArgumentError(f"max_slice_nums must be a positive integer, got {max_slice_nums!r}")
        o.max_slice_nums = max_slice_nums
    if use_image_id is not None:
        o.use_image_id = int(bool(use_image_id))
    return o


@dataclass
class _ChatRequest:
    """What chat() answers, checked: the core's turns, whether they hold video, and its parameters."""

    turns: list
    video: bool
    params: _core.GenerateParams
    options: _core.ChatOptions


def _chat_request(
    model: Model, msgs, image, vision_hidden_states, max_new_tokens, min_new_tokens, sampling, max_inp_length,
    system_prompt, stream, max_slice_nums, use_image_id, kwargs: dict,
) -> _ChatRequest:  # fmt: skip
    """chat()'s arguments checked and turned into a request (also the server's way in)."""
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
    params = _generate_params(sampling, max_new_tokens, kwargs)
    if stream and params.beam_search and params.beam.num_beams > 1:
        raise _core.InvalidArgumentError(
            "stream=True cannot be used with beam search: use sampling=True or num_beams=1"
        )
    turns, video = _turns_from_msgs(msgs, image, system_prompt)
    options = _chat_options(max_slice_nums, use_image_id)
    if max_inp_length is not None:
        if not isinstance(max_inp_length, int) or isinstance(max_inp_length, bool) or max_inp_length < 1:
            raise _core.InvalidArgumentError(f"max_inp_length must be a positive integer, got {max_inp_length!r}")
        n_prompt = len(model._model.chat_prompt(turns, options, video))
        if n_prompt > max_inp_length:
            raise _core.InvalidArgumentError(
                f"the prompt has {n_prompt} tokens, more than max_inp_length={max_inp_length}"
            )
    return _ChatRequest(turns, video, params, options)


def _iterable(value, name: str):
    try:
        return list(value)
    except TypeError:
        raise _core.InvalidArgumentError(f"{name} must be a list, got {type(value).__name__}") from None


def _session_params(n_ctx=None, n_batch=None, n_threads=None, kv_cache_type=None) -> _core.SessionParams:
    params = _core.SessionParams()
    for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch)):
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _core.InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
            setattr(params, name, value)
    if n_threads is not None:
        if not isinstance(n_threads, int) or isinstance(n_threads, bool) or n_threads < 1:
            raise _core.InvalidArgumentError(f"n_threads must be a positive integer or None, got {n_threads!r}")
        params.n_threads = n_threads
    if kv_cache_type is not None:
        params.kv_cache_type = kv_cache_type
    return params


class Conversation:
    """One conversation over a loaded :class:`Model`, with its own KV cache: ``model.conversation()``.

    Conversations share the model's weights and may run on different threads at once; one
    conversation serves one call at a time. ``chat()`` takes the whole conversation each call (HF's
    ``msgs``); what it shares with the previous call is reused from the cache, images included.
    """

    def __init__(self, model: Model, params: _core.SessionParams, eval_callback=None, eval_names=()):
        self.model = model
        self._conversation = _core.Conversation(model._model, params, eval_callback, list(eval_names))
        self._session = self._conversation.session
        self._lock = threading.Lock()
        self._stream_cancel: threading.Event | None = None  # set: the running stream stops
        # The core's report on the latest chat(): tokens, stop reason, prompt positions reused from
        # the cache, image slices encoded, timings (a GenerateResult).
        self.last_result: _core.GenerateResult | None = None

    @property
    def n_ctx(self) -> int:
        return self._session.n_ctx

    @contextlib.contextmanager
    def _call(self):
        """The conversation for one call. A stream still generating on it is cancelled first (its
        generator ends with the pieces it has), so an abandoned stream never holds up the next call."""
        if self._stream_cancel is not None:
            self._stream_cancel.set()
        with self._lock:
            yield

    def encode_slices(self, slices):
        """Resampler outputs [n, n_query·embed] for normalised float32 [3, H, W] slices (all in one
        batch); for tools and tests."""
        with self._call():
            return self._session.encode_slices(list(slices))

    def eval(self, ids: Sequence[int], all_logits: bool = False):
        """Appends ``ids`` to the conversation's cache and returns logits (last position, or all)."""
        with self._call():
            return self._session.eval(list(ids), all_logits)

    def reset(self) -> None:
        """Forgets the cached conversation."""
        with self._call():
            self._conversation.reset()
            self._session.truncate(0)

    def chat(
        self,
        msgs=None,
        image=None,
        tokenizer=None,
        processor=None,
        vision_hidden_states=None,
        max_new_tokens: int = _GENERATE.max_new_tokens,
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
        request = _chat_request(
            self.model, msgs, image, vision_hidden_states, max_new_tokens, min_new_tokens, sampling,
            max_inp_length, system_prompt, stream, max_slice_nums, use_image_id, kwargs,
        )  # fmt: skip
        if not stream:
            # A callback per piece runs Python on this thread between tokens, where a pending Ctrl-C
            # raises KeyboardInterrupt and ends the generation (without one it ran to its end).
            with self._call():
                return self._run(request, lambda piece: True).text
        return self._stream(request)

    def _run(self, request: _ChatRequest, on_piece=None) -> _core.GenerateResult:
        """Answers a checked request on this conversation; on_piece(bytes) -> bool streams and cancels.
        The caller holds the conversation (_call)."""
        self._conversation.set_messages(request.turns, request.video)
        self.last_result = self._conversation.generate(request.params, request.options, on_piece)
        return self.last_result

    def generate(self, prompt: Sequence[int], **kwargs) -> _core.GenerateResult:
        """Low level: runs the prompt ids as given and returns the core's GenerateResult (tokens,
        text, stop_reason, timings). Keyword arguments as chat()'s (``sampling`` included); the
        defaults are HF's sampling ones with seed 0."""
        sampling = kwargs.pop("sampling", True)
        unknown = sorted(set(kwargs) - _CHAT_OPTIONS - {"max_new_tokens"})
        if unknown:
            raise _core.InvalidArgumentError(f"unknown generate() argument(s): {', '.join(unknown)}")
        params = _generate_params(
            sampling, kwargs.pop("max_new_tokens", _GENERATE.max_new_tokens), {"seed": 0, **kwargs}
        )
        with self._call():
            return self._session.generate(_core.Prompt(list(prompt)), params)

    def _stream(self, request: _ChatRequest) -> Iterator[str]:
        # The core runs in a thread (GIL released) and hands pieces over a queue; closing the
        # generator early cancels the generation at the next token.
        pieces: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        done = object()

        def on_piece(piece: bytes) -> bool:  # an empty piece: beam search asking whether to go on
            if piece:
                pieces.put(piece.decode("utf-8", errors="replace"))
            return not cancelled.is_set()

        def run():
            try:
                with self._lock:  # the consumer cancelled any earlier stream (_call)
                    self._run(request, on_piece)
            except BaseException as exc:  # handed to the consumer, raised there
                pieces.put(exc)
            finally:
                pieces.put(done)

        def consume():
            with self._call():  # cancels an earlier stream; this one takes the lock in its worker
                self._stream_cancel = cancelled
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


class Model:
    """A MiniCPM-V 2.6 model loaded from GGUF.

    ``Model("ggml-model-Q4_K_M.gguf")`` loads the language model (and, with ``mmproj_path``, the
    vision file). ``chat()`` and the other conversation calls go to the model's own
    :class:`Conversation`, whose KV cache successive calls reuse; ``model.conversation()`` opens
    more, each with its own cache, to run side by side on other threads.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        mmproj_path: str | os.PathLike | None = None,
        n_ctx: int = _SESSION.n_ctx,
        n_threads: int | None = None,
        n_batch: int = _SESSION.n_batch,
        device: str = _MODEL.device,
        kv_cache_type: str = _SESSION.kv_cache_type,
        cpu_repack: bool = _MODEL.cpu_repack,
        use_mmap: bool = _MODEL.use_mmap,
    ):
        self.model_path = os.fspath(model_path)
        self.mmproj_path = None if mmproj_path is None else os.fspath(mmproj_path)
        params = _core.ModelParams()
        params.device = device
        # cpu_repack: quantized weights in ggml's CPU_REPACK layout (an opt-in extra buffer type).
        # use_mmap=False: weights copied into memory instead of used from the file mapping (on the
        # CPU ~10 % faster decoding, slower loading), as llama.cpp's --no-mmap.
        params.cpu_repack = bool(cpu_repack)
        params.use_mmap = bool(use_mmap)
        self._session_args = dict(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, kv_cache_type=kv_cache_type)
        session = _session_params(**self._session_args)  # checked before the load
        self._model = _core.Model(self.model_path, self.mmproj_path or "", params)
        self._default = Conversation(self, session)

    @classmethod
    def from_pretrained(
        cls,
        repo_id: str | None = None,
        filename: str | None = None,
        mmproj_filename: str | None = None,
        vision: bool = True,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        **model_args,
    ) -> Model:
        """A model by name from the Hugging Face hub, downloaded once into its cache (minicpmv.hub):
        ``Model.from_pretrained("openbmb/MiniCPM-V-2_6-gguf", "ggml-model-Q4_K_M.gguf")``, which is
        also the default. The vision file is the repository's mmproj*.gguf unless named, or none
        with ``vision=False``; other arguments go to ``Model()``."""
        from . import hub

        llm, mmproj = hub.download(
            repo_id or hub.DEFAULT_REPO, filename or hub.DEFAULT_FILE, mmproj_filename, vision, revision, cache_dir
        )
        return cls(llm, mmproj_path=mmproj, **model_args)

    def conversation(self, eval_callback=None, eval_names: Sequence[str] = (), **session_args) -> Conversation:
        """A new conversation with its own KV cache; arguments (n_ctx, n_batch, n_threads,
        kv_cache_type) default to the model's.

        ``eval_callback(name, array)`` receives the intermediate tensors named in ``eval_names`` as
        float32 arrays as the graphs compute them (llama.cpp's cb_eval): "vpm_embeddings",
        "vpm_layer_out-<i>", "vpm_out", "resampler_out", "attn_norm-<i>", "layer_out-<i>",
        "output_norm", "logits", … (csrc/model/*.cpp name them). Slower while set."""
        params = _session_params(**{**self._session_args, **session_args})
        if eval_callback is not None and not callable(eval_callback):
            raise _core.InvalidArgumentError(f"eval_callback must be callable, got {type(eval_callback).__name__}")
        if isinstance(eval_names, str) or not all(isinstance(n, str) for n in _iterable(eval_names, "eval_names")):
            raise _core.InvalidArgumentError(f"eval_names must be a list of tensor names, got {eval_names!r}")
        return Conversation(self, params, eval_callback, eval_names)

    # --- tokens ------------------------------------------------------------------------------
    @property
    def config(self) -> _core.LlmConfig:
        return self._model.config

    @property
    def decode_counts(self) -> tuple[int, int]:
        """(decode steps so far, graphs they ran in): conversations generating at the same time on
        different threads decode in shared graphs, one pass over the weights for all."""
        return self._model.decode_counts

    def tokenize(self, text: str, parse_special: bool = False) -> list[int]:
        return self._model.tokenizer.encode(text, parse_special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._model.tokenizer.decode(list(ids))

    def chat_prompt(
        self, msgs, system_prompt: str = "", image=None, max_slice_nums=None, use_image_id=None
    ) -> list[int]:
        """The prompt ids chat() would evaluate for ``msgs`` (ChatML, docs/model.md §7); image
        embedding positions hold the <unk> id, as in HF."""
        turns, video = _turns_from_msgs(msgs, image, system_prompt)
        return self._model.chat_prompt(turns, _chat_options(max_slice_nums, use_image_id), video).tokens

    # --- the model's own conversation ----------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self._default.n_ctx

    @property
    def last_result(self) -> _core.GenerateResult | None:
        return self._default.last_result

    def chat(self, msgs=None, *args, **kwargs) -> str | Iterator[str]:
        return self._default.chat(msgs, *args, **kwargs)

    chat.__doc__ = Conversation.chat.__doc__

    def generate(self, prompt: Sequence[int], **kwargs) -> _core.GenerateResult:
        return self._default.generate(prompt, **kwargs)

    def encode_slices(self, slices):
        return self._default.encode_slices(slices)

    def eval(self, ids: Sequence[int], all_logits: bool = False):
        return self._default.eval(ids, all_logits)

    def reset(self) -> None:
        self._default.reset()
