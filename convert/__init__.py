"""HF checkpoint → GGUF conversion for MiniCPM-V 2.6, and synthetic checkpoints for tests.

Modules: ``gguf_layout`` (key and tensor names), ``hf_to_gguf`` (LLM file), ``tokenizer_files`` and
``synthetic`` (test checkpoints), ``cli`` (``minicpmv-convert``).
"""


class ConversionError(ValueError):
    """The input checkpoint cannot be converted; the message names the file or tensor at fault."""
