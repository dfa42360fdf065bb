"""Independent references for the tests: the checkpoint's LLM, vision tower, resampler and tokenizer
through transformers and PyTorch (models), HF's chat() pipeline around them (chat), HF's slicing plan
(slicing) and a GGUF reader on ggml's own parser (models.read_gguf). None shares code with the
runtime or the converter."""
