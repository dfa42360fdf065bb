"""minicpmv: a native (ggml) runtime for MiniCPM-V 2.6 with an HF-style ``chat()``."""

from ._core import (
    CancelledError,
    ContextFullError,
    InvalidArgumentError,
    MinicpmvError,
    ModelFileError,
    ModelFormatError,
    UnsupportedError,
)
from . import _logging, video
from .model import Conversation, Model

__all__ = [
    "Model",
    "Conversation",
    "video",
    "MinicpmvError",
    "InvalidArgumentError",
    "ModelFileError",
    "ModelFormatError",
    "UnsupportedError",
    "ContextFullError",
    "CancelledError",
]
