"""Video frames for chat(), sampled as the model card's encode_video does (docs/model.md §7): one frame per
second (a step of round(average_fps / fps) frames), uniformly thinned to at most ``max_frames`` by
taking index ``int(i·gap + gap/2)``.

    frames = minicpmv.video.load_frames("clip.mp4")
    model.chat([{"role": "user", "content": frames + ["Describe the video."]}],
               use_image_id=False, max_slice_nums=2)
"""

from __future__ import annotations

import os

from . import _core


def sample_indices(n_frames: int, average_fps: float, fps: float = 1.0, max_frames: int = 64) -> list[int]:
    """The frame indices the model card's encode_video keeps."""
    step = max(1, round(average_fps / fps))
    idx = list(range(0, n_frames, step))
    if len(idx) > max_frames:
        gap = len(idx) / max_frames
        idx = [idx[int(i * gap + gap / 2)] for i in range(max_frames)]
    return idx


def load_frames(path: str | os.PathLike, fps: float = 1.0, max_frames: int = 64) -> list:
    """Decode the sampled frames of a video file as RGB PIL images (PyAV, the `video` extra)."""
    if fps <= 0 or max_frames < 1:
        raise _core.InvalidArgumentError(f"fps must be > 0 and max_frames >= 1, got fps={fps}, max_frames={max_frames}")
    try:
        import av
    except ImportError as exc:
        raise _core.UnsupportedError("video needs PyAV: pip install 'minicpmv[video]'") from exc

    path = os.fspath(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise _core.InvalidArgumentError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            if rate <= 0:
                raise _core.InvalidArgumentError(f"{path}: the video has no frame rate")
            n_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        keep = set(sample_indices(n_frames, rate, fps, max_frames))
        frames = []
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in keep:
                    frames.append(frame.to_image().convert("RGB"))
                if len(frames) == len(keep):
                    break
    except av.FFmpegError as exc:
        raise _core.InvalidArgumentError(f"{path}: cannot read the video ({exc})") from None
    if not frames:
        raise _core.InvalidArgumentError(f"{path}: no frames could be decoded")
    return frames
