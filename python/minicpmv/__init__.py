"""minicpmv: a native (ggml) runtime for MiniCPM-V 2.6 with an HF-style ``chat()``."""

from . import _logging, video  # noqa: F401 (_logging installs the bridge to the logging module)
from ._core import (
    CancelledError,
    ContextFullError,
    InvalidArgumentError,
    MinicpmvError,
    ModelFileError,
    ModelFormatError,
    UnsupportedError,
)
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
