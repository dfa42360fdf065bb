"""``minicpmv serve``: an OpenAI-compatible HTTP server (FastAPI + uvicorn + sse-starlette).

POST /v1/chat/completions (messages with text, image_url and video_url parts; stream over SSE ending in
[DONE]; temperature, top_p, max_tokens / max_completion_tokens, stop, seed, n=1; usage with the prompt
positions reused from the cache as prompt_tokens_details.cached_tokens, and llama-server's timings),
GET /v1/models, GET /health, and the chat page at GET / (web/index.html).

Several conversations at once: ``parallel`` slots over one loaded model, each a Conversation with its
own KV cache. A request takes the free slot whose cache shares the longest prefix with its prompt (a
client continuing a chat about an image does not pay for the image again); at most ``max_queue``
requests wait for a slot, more are answered 503. A client that disconnects frees its slot at the next
token. Local files are readable only under ``allow_files``, remote URLs only with ``allow_remote_urls``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sse_starlette.sse import EventSourceResponse

from . import _core
from .model import _GENERATE, Conversation, Model, _chat_request, _ChatRequest, data_url


class ApiError(Exception):
    """An OpenAI-shaped error: HTTP status, message, type, the offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


@dataclass
class Limits:
    max_body_bytes: int = 32 << 20
    max_image_pixels: int = 5000 * 5000
    max_images: int = 64
    max_queue: int = 32


@dataclass
class Slot:
    conversation: Conversation
    busy: bool = False
    tokens: list[int] = field(default_factory=list)  # the prompt + reply its cache holds


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Engine:
    """The slots and the queue in front of them."""

    def __init__(self, model: Model, parallel: int, limits: Limits, n_threads: int | None):
        if parallel < 1:
            raise _core.InvalidArgumentError(f"parallel must be >= 1, got {parallel}")
        self.model, self.limits = model, limits
        # The slots take turns on the CPU (their decode steps as one graph), each with every thread.
        threads = n_threads or os.cpu_count() or 1
        self.slots = [Slot(model.conversation(n_threads=threads)) for _ in range(parallel)]
        self._free = asyncio.Condition()
        self.waiting = 0

    async def acquire(self, prompt: list[int]) -> Slot:
        async with self._free:
            if self.waiting >= self.limits.max_queue and all(s.busy for s in self.slots):
                raise ApiError(
                    503, "the server is busy: every slot is taken and the queue is full", kind="server_error"
                )
            self.waiting += 1
            try:
                await self._free.wait_for(lambda: any(not s.busy for s in self.slots))
            finally:
                self.waiting -= 1
            slot = max((s for s in self.slots if not s.busy), key=lambda s: _common_prefix(s.tokens, prompt))
            slot.busy = True
            return slot

    async def release(self, slot: Slot) -> None:
        async with self._free:
            slot.busy = False
            self._free.notify()


# --- requests ---------------------------------------------------------------------------------------


class Media:
    """Turns image_url / video_url parts into what chat() takes, under the server's rules."""

    def __init__(self, allow_files: Path | None, allow_remote_urls: bool, limits: Limits):
        self.allow_files = allow_files.resolve() if allow_files is not None else None
        self.allow_remote_urls, self.limits = allow_remote_urls, limits

    def fetch(self, url, param: str, kind: str) -> bytes:
        if not isinstance(url, str) or not url:
            raise ApiError(400, f"{param} must be a non-empty string URL", param)
        if url.startswith("data:"):
            try:
                media_type, data = data_url(url, param)
            except _core.InvalidArgumentError as exc:
                raise ApiError(400, str(exc), param) from None
            if not media_type.startswith(f"{kind}/"):
                raise ApiError(400, f"{param}: the data URL holds {media_type or 'no media type'}, not {kind}", param)
            return data
        if url.startswith(("http://", "https://")):
            if not self.allow_remote_urls:
                raise ApiError(
                    400, f"{param}: remote URLs are off on this server (start it with --allow-remote-urls)", param
                )
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    data = response.read(self.limits.max_body_bytes + 1)
            except OSError as exc:
                raise ApiError(400, f"{param}: cannot fetch {url}: {exc}", param) from None
            if len(data) > self.limits.max_body_bytes:
                raise ApiError(413, f"{param}: {url} is larger than {self.limits.max_body_bytes} bytes", param)
            return data
        return self._local(url[len("file://") :] if url.startswith("file://") else url, param)

    def _local(self, path: str, param: str) -> bytes:
        if self.allow_files is None:
            raise ApiError(400, f"{param}: local files are off on this server (start it with --allow-files DIR)", param)
        # realpath resolves symlinks and "..": the file itself must lie under the allowed directory.
        real = Path(os.path.realpath(os.path.join(self.allow_files, path)))
        if real != self.allow_files and self.allow_files not in real.parents:
            raise ApiError(403, f"{param}: {path!r} is outside the directory this server may read", param)
        if not real.is_file():
            raise ApiError(400, f"{param}: no file {path!r}", param)
        if real.stat().st_size > self.limits.max_body_bytes:
            raise ApiError(413, f"{param}: {path!r} is larger than {self.limits.max_body_bytes} bytes", param)
        return real.read_bytes()

    def image(self, data: bytes, param: str):
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > self.limits.max_image_pixels:
                raise ApiError(
                    400,
                    f"{param}: {image.width}x{image.height} is more than {self.limits.max_image_pixels} pixels",
                    param,
                )
            image.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ApiError(400, f"{param}: not a readable image ({exc})", param) from None
        return image

    def video(self, data: bytes, param: str) -> dict:
        from .video import load_frames

        with tempfile.NamedTemporaryFile(suffix=".video") as f:
            f.write(data)
            f.flush()
            try:
                frames = load_frames(f.name)
            except Exception as exc:  # PyAV raises its own errors for undecodable data
                raise ApiError(400, f"{param}: not a readable video ({exc})", param) from None
        return {"type": "video", "video": frames}


def _messages(body: dict, media: Media, limits: Limits) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty array", "messages")
    out, n_images = [], 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object", where)
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant") or (role == "system" and i != 0):
            raise ApiError(400, f"{where}.role must be 'user' or 'assistant' (or 'system' first), got {role!r}", where)
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise ApiError(400, f"{where}.content must be a string or an array of parts", where)
        parts = []
        for j, part in enumerate(content):
            param = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif kind in ("image_url", "video_url"):
                ref = part.get(kind)
                url = ref.get("url") if isinstance(ref, dict) else ref
                n_images += 1
                if n_images > limits.max_images:
                    raise ApiError(400, f"more than {limits.max_images} images or videos in one request", param)
                data = media.fetch(url, param, "image" if kind == "image_url" else "video")
                parts.append(media.image(data, param) if kind == "image_url" else media.video(data, param))
            else:
                raise ApiError(400, f"{param}: parts are {{'type': 'text' | 'image_url' | 'video_url', ...}}", param)
        if role != "user" and any(not isinstance(p, str) for p in parts):
            raise ApiError(400, f"{where}: only user messages may hold images", where)
        out.append({"role": role, "content": parts})
    return out


def _number(body: dict, name: str, lo: float, hi: float, integer: bool = False):
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"{name} must be {kind} from {lo} to {hi}, got {value!r}", name)
    return value


def _request(model: Model, body: dict, msgs: list) -> tuple[_ChatRequest, list[str], list[int]]:
    """The OpenAI request as chat() takes it (unset sampling parameters: HF chat()'s), its stop
    strings, and its prompt ids."""
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", "n")
    n_ctx = model.n_ctx
    max_tokens = _number(body, "max_completion_tokens", 1, n_ctx, True) or _number(body, "max_tokens", 1, n_ctx, True)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "stop must be a string or an array of up to 4 non-empty strings", "stop")
    sampling = dict(
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        seed=_number(body, "seed", 0, 2**64 - 1, True),
    )
    max_slice_nums = _number(body, "max_slice_nums", 1, 64, True)
    # Extension: num_beams > 1 is HF chat(sampling=False), beam search (its whole answer at the end).
    num_beams = _number(body, "num_beams", 1, 8, True)
    beams = num_beams is not None and num_beams > 1
    options = {"num_beams": num_beams} if beams else {k: v for k, v in sampling.items() if v is not None}
    try:
        request = _chat_request(
            model, msgs, None, None, max_tokens or _GENERATE.max_new_tokens, 0, not beams, None, "", not beams,
            max_slice_nums, None, options,
        )  # fmt: skip
        prompt = model._model.chat_prompt(request.turns, request.options, request.video).tokens
    except _core.MinicpmvError as exc:
        raise ApiError(400, str(exc), "messages") from None
    if len(prompt) + 1 > n_ctx:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; the context holds {n_ctx}", "messages")
    request.params.max_new_tokens = min(request.params.max_new_tokens, n_ctx - len(prompt))
    return request, stops, prompt


# --- the application ---------------------------------------------------------------------------------

_PAGE = Path(__file__).parent / "web" / "index.html"


def create_app(
    model: Model,
    model_name: str,
    parallel: int = 1,
    api_key: str | None = None,
    allow_files: str | os.PathLike | None = None,
    allow_remote_urls: bool = False,
    limits: Limits | None = None,
    n_threads: int | None = None,
):
    limits = limits or Limits()
    media = Media(Path(allow_files) if allow_files is not None else None, allow_remote_urls, limits)
    app = FastAPI(title="minicpmv", docs_url=None, redoc_url=None)
    state: dict = {}

    def engine() -> Engine:
        if "engine" not in state:  # made on the server's event loop
            state["engine"] = Engine(model, parallel, limits, n_threads)
        return state["engine"]

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal_error(_request, exc: Exception):  # a bug: still the OpenAI error shape
        return JSONResponse(ApiError(500, f"internal error: {exc!r}", kind="server_error").body(), status_code=500)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return JSONResponse(ApiError(401, "invalid or missing API key", kind="invalid_api_key").body(), 401)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            return JSONResponse(ApiError(413, f"the request is larger than {limits.max_body_bytes} bytes").body(), 413)
        return await call_next(request)

    @app.get("/health")
    async def health():
        e = engine()
        steps, batches = model.decode_counts
        return {
            "status": "ok",
            "slots": len(e.slots),
            "busy": sum(s.busy for s in e.slots),
            "waiting": e.waiting,
            "decode_steps": steps,  # tokens decoded so far, in
            "decode_batches": batches,  # this many graphs (the slots' steps run together)
        }

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "minicpmv"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            raise ApiError(413, f"the request is larger than {limits.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        if body.get("model") not in (None, model_name):
            raise ApiError(404, f"the model {body.get('model')!r} does not exist (this server has {model_name!r})",
                           "model", "model_not_found")  # fmt: skip
        loop = asyncio.get_running_loop()
        msgs = await loop.run_in_executor(None, _messages, body, media, limits)
        chat_request, stops, prompt = await loop.run_in_executor(None, _request, model, body, msgs)
        stream_options = body.get("stream_options") or {}
        if not isinstance(stream_options, dict):
            raise ApiError(400, "stream_options must be an object", "stream_options")
        run = Run(engine(), chat_request, stops, prompt, loop)
        meta = dict(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name)
        if body.get("stream"):
            return EventSourceResponse(run.events(meta, bool(stream_options.get("include_usage"))), ping=15)
        text = await run.complete(request)
        return {
            **meta,
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": run.finish_reason}
            ],
            "usage": run.usage(),
            "timings": run.timings(),
        }

    @app.get("/", include_in_schema=False)
    async def page():
        # The chat page (python/minicpmv/web/): one file, everything inline, nothing from elsewhere.
        return HTMLResponse(_PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})

    return app


class Run:
    """One request on one slot: the generation in a worker thread, its pieces handed to the event loop."""

    def __init__(self, engine: Engine, request: _ChatRequest, stops: list[str], prompt: list[int], loop):
        self.engine, self.request, self.stops, self.prompt, self.loop = engine, request, stops, prompt, loop
        self.cancel = threading.Event()
        self.pieces: asyncio.Queue = asyncio.Queue()
        self.finish_reason = "stop"
        self.stopped_by_string = False
        self.result = None

    async def _pieces(self):
        """The reply's pieces as they come, stop strings applied; the slot is held meanwhile."""
        slot = await self.engine.acquire(self.prompt)
        worker = threading.Thread(target=self._generate, args=(slot,), daemon=True)
        worker.start()
        text, sent = "", 0
        hold = max((len(s) - 1 for s in self.stops), default=0)  # what could begin a stop string waits
        try:
            while (item := await self.pieces.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                text += item
                cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
                if cut >= 0:  # OpenAI's stop: the text ends before it, the generation ends here
                    self.stopped_by_string = True
                    self.cancel.set()
                    if cut > sent:
                        yield text[sent:cut]
                    return
                safe = max(sent, len(text) - hold)
                if safe > sent:
                    yield text[sent:safe]
                    sent = safe
            if sent < len(text):
                yield text[sent:]
        finally:
            # Shielded: a departed client cancels this task, and the slot must still come back.
            with anyio.CancelScope(shield=True):
                self.cancel.set()
                await asyncio.get_running_loop().run_in_executor(None, worker.join)
                slot.tokens = self.prompt + (list(self.result.tokens) if self.result is not None else [])
                await self.engine.release(slot)
            if self.result is not None and self.result.stop_reason == "length" and not self.stopped_by_string:
                self.finish_reason = "length"

    def _generate(self, slot: Slot) -> None:
        def put(item) -> None:
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, item)

        def on_piece(piece: bytes) -> bool:  # the core stops at the next token once cancelled
            if piece:  # empty: beam search asking whether to go on
                put(piece.decode("utf-8", errors="replace"))
            return not self.cancel.is_set()

        try:
            with slot.conversation._call():
                self.result = slot.conversation._run(self.request, on_piece)
        except BaseException as exc:
            put(ApiError(400, str(exc)) if isinstance(exc, _core.MinicpmvError) else exc)
        finally:
            put(None)

    def timings(self) -> dict:
        """llama-server's timings (an extension the OpenAI clients ignore): the prompt positions
        evaluated for this request and the answer's tokens, with their times and rates."""
        r = self.result
        if r is None:
            return {}
        prompt_n, predicted_n = r.n_prompt - r.n_reused, len(r.tokens)
        return {"cache_n": r.n_reused, "prompt_n": prompt_n, "prompt_ms": r.prefill_ms,
                "prompt_per_second": prompt_n * 1000 / r.prefill_ms if r.prefill_ms > 0 else None,
                "predicted_n": predicted_n, "predicted_ms": r.decode_ms,
                "predicted_per_second": predicted_n * 1000 / r.decode_ms if r.decode_ms > 0 else None}  # fmt: skip

    def usage(self) -> dict:
        r = self.result
        completion = len(r.tokens) if r is not None else 0
        prompt = r.n_prompt if r is not None else len(self.prompt)
        cached = r.n_reused if r is not None else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip

    async def complete(self, request) -> str:
        async def watch():  # a client that goes away frees its slot at the next token
            while not self.cancel.is_set():
                if await request.is_disconnected():
                    self.cancel.set()
                    return
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        try:
            return "".join([piece async for piece in self._pieces()])
        finally:
            watcher.cancel()

    async def events(self, meta: dict, include_usage: bool):
        def chunk(delta: dict, finish=None, **extra) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return json.dumps({**meta, "object": "chat.completion.chunk", "choices": [choice], **extra})

        try:
            yield {"data": chunk({"role": "assistant", "content": ""})}
            async for piece in self._pieces():
                yield {"data": chunk({"content": piece})}
            yield {"data": chunk({}, self.finish_reason, timings=self.timings())}
            if include_usage:
                yield {
                    "data": json.dumps(
                        {**meta, "object": "chat.completion.chunk", "choices": [], "usage": self.usage()}
                    )
                }
        except ApiError as exc:
            yield {"data": json.dumps(exc.body())}
        yield {"data": "[DONE]"}


def serve(args) -> int:
    """`minicpmv serve`: load, then run uvicorn on args.host:args.port until interrupted."""
    import uvicorn

    from .cli import _load

    model = _load(args)
    name = args.alias or Path(model.model_path).stem
    app = create_app(
        model,
        name,
        parallel=args.parallel,
        api_key=args.api_key or os.environ.get("MINICPMV_API_KEY"),
        allow_files=args.allow_files,
        allow_remote_urls=args.allow_remote_urls,
        limits=Limits(args.max_body_bytes, args.max_image_pixels, args.max_images, args.max_queue),
        n_threads=args.threads,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
