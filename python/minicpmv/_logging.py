"""The core's messages through Python's logging module (logger "minicpmv"): load information at
INFO, ggml's own chatter at DEBUG. Installed on import; silenced at exit."""

from __future__ import annotations

import atexit
import logging

from . import _core

logger = logging.getLogger("minicpmv")

_LEVELS = {
    _core.LogLevel.debug: logging.DEBUG,
    _core.LogLevel.info: logging.INFO,
    _core.LogLevel.warn: logging.WARNING,
    _core.LogLevel.error: logging.ERROR,
}


def _forward(level: _core.LogLevel, text: str) -> None:
    python_level = _LEVELS[level]
    if logger.isEnabledFor(python_level):
        logger.log(python_level, "%s", text)


_core.set_log_callback(_forward)
atexit.register(_core.set_log_callback, None)
