"""The C++ sampler and beam search (csrc/generate/sampler.cpp, csrc/generate/beam_search.cpp) against transformers' own
generate(): the reference is HF's processors and search loop, driven the way MiniCPM-V's chat() drives
them (docs/model.md §8): inputs_embeds and no input_ids, so the repetition penalty only sees generated tokens.

The toy model below returns logits from a Python function of the tokens generated so far. On the HF
side it is a minimal PreTrainedModel/GenerationMixin that receives the prompt as inputs_embeds and
follows the beams through `_reorder_cache`, the hook generate() calls with each step's parent beams;
on our side the same function is driven through `beam_search_toy`'s (parents, tokens) step callback.
No prompt token exists on either side, so there is nothing the penalty could treat differently.
"""

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
core = pytest.importorskip("minicpmv._core")

from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel  # noqa: E402 (after the skips)
from transformers.modeling_outputs import CausalLMOutput  # noqa: E402


def sample_token(logits, generated, temperature, top_k, top_p, min_p, repetition_penalty, seed) -> int:
    """One token from the core's Sampler with these parameters (HF's processor order)."""
    p = core.SamplingParams()
    p.temperature, p.top_k, p.top_p, p.min_p = temperature, top_k, top_p, min_p
    p.repetition_penalty, p.seed = repetition_penalty, seed
    return core._testing.sample_token(logits, generated, p)


# --- a toy language model that HF generate() can run --------------------------------------------


class _ToyConfig(PretrainedConfig):
    model_type = "minicpmv_sampler_toy"

    def __init__(self, vocab_size=64, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = 4
        # generate() builds a DynamicCache from these even though the toy never fills it.
        self.num_hidden_layers = 1
        self.num_attention_heads = 1
        super().__init__(**kwargs)


class _ToyLM(PreTrainedModel, GenerationMixin):
    config_class = _ToyConfig

    def __init__(self, config, logits_fn):
        super().__init__(config)
        self.logits_fn = logits_fn
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives generate() a dtype and device
        self.histories = []
        self.post_init()

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is not None:  # the prompt: one empty history per (beam-expanded) row
            self.histories = [[] for _ in range(inputs_embeds.shape[0])]
        else:
            for history, token in zip(self.histories, input_ids[:, -1].tolist()):
                history.append(token)
        logits = np.stack([self.logits_fn(h) for h in self.histories]).astype(np.float32)
        return CausalLMOutput(logits=torch.from_numpy(logits)[:, None, :])

    def _reorder_cache(self, cache, beam_idx):
        self.histories = [list(self.histories[i]) for i in beam_idx.tolist()]
        return cache


def _hf_generate(logits_fn, n_vocab, **kwargs):
    model = _ToyLM(_ToyConfig(vocab_size=n_vocab), logits_fn).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the inputs_embeds + repetition_penalty notice, unused flags
        return model.generate(
            inputs_embeds=torch.zeros(1, 2, 4),
            attention_mask=torch.ones(1, 2, dtype=torch.long),
            pad_token_id=0,
            **kwargs,
        )


# --- sampling: HF's processed scores for a given row and generated history ------------------------


def _hf_processed(row, generated, *, do_sample, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, penalty=1.0):
    """HF's scores after its whole processor list, at the step after `generated` was produced.

    generate() must have produced `generated` itself for the penalty to see it, so the toy forces those
    tokens first (every other logit -inf) and returns `row` afterwards."""
    n_vocab = len(row)

    def logits_fn(history):
        if len(history) < len(generated):
            forced = np.full(n_vocab, -np.inf, dtype=np.float32)
            forced[generated[len(history)]] = 0.0
            return forced
        return row

    cfg = {"do_sample": do_sample, "repetition_penalty": float(penalty)}
    if do_sample:
        cfg.update(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), min_p=float(min_p))
    out = _hf_generate(
        logits_fn,
        n_vocab,
        max_new_tokens=len(generated) + 1,
        output_scores=True,
        return_dict_in_generate=True,
        **cfg,
    )
    assert out.sequences[0, : len(generated)].tolist() == list(generated)
    return out.scores[len(generated)][0].numpy()


def _softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def _chi2_bound(df, z=5.0):
    # Wilson-Hilferty: the chi-square quantile at a normal z score (z=5: p ~ 3e-7 per case).
    return df * (1.0 - 2.0 / (9.0 * df) + z * math.sqrt(2.0 / (9.0 * df))) ** 3


def _check_distribution(row, generated, n_draws, *, temperature, top_k, top_p, min_p, penalty):
    scores = _hf_processed(
        row, generated, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, penalty=penalty
    )
    probs = _softmax(scores)
    counts = np.zeros(len(row), dtype=np.int64)
    for seed in range(n_draws):
        token = sample_token(row, generated, temperature, top_k, top_p, min_p, penalty, seed)
        counts[token] += 1
    filtered = np.isneginf(scores)
    assert counts[filtered].sum() == 0, f"sampled tokens HF filters out: {np.nonzero(counts * filtered)[0]}"
    # Every kept token with an expected count >= 20 shows up (a miss has chance e^-20 ~ 2e-9).
    missing = np.nonzero((probs * n_draws >= 20) & (counts == 0))[0]
    assert missing.size == 0, f"tokens HF keeps were never sampled: {missing}"
    expected = probs * n_draws
    big = expected >= 5.0
    obs_bins = list(counts[big]) + [counts[~big].sum()]
    exp_bins = list(expected[big]) + [expected[~big].sum()]
    if exp_bins[-1] < 5.0:  # too small a tail to test as a bin; its tokens were checked above
        obs_bins, exp_bins = obs_bins[:-1], exp_bins[:-1]
    if len(exp_bins) >= 2:
        obs_bins, exp_bins = np.array(obs_bins, dtype=np.float64), np.array(exp_bins)
        stat = float(((obs_bins - exp_bins) ** 2 / exp_bins).sum())
        assert stat < _chi2_bound(len(exp_bins) - 1), f"chi-square {stat:.1f} over {len(exp_bins)} bins"
    else:
        assert counts[big].sum() == n_draws


def _random_case(rng):
    n_vocab = int(rng.integers(20, 121))
    row = (rng.normal(size=n_vocab) * rng.uniform(1.0, 4.0)).astype(np.float32)
    generated = rng.integers(0, n_vocab, size=int(rng.integers(0, 30))).tolist()
    params = {
        "temperature": float(rng.choice([0.7, 1.0, rng.uniform(0.3, 1.5)])),
        "top_k": int(rng.choice([100, 0, 1, int(rng.integers(1, n_vocab + 5))])),
        "top_p": float(rng.choice([0.8, 1.0, 0.0, rng.uniform(0.05, 0.99)])),
        "min_p": float(rng.choice([0.0, 0.0, rng.uniform(0.01, 0.3)])),
        "penalty": float(rng.choice([1.05, 1.0, rng.uniform(0.8, 1.5)])),
    }
    if params["top_p"] == 1.0 and rng.random() < 0.5:
        # Ties at the top-k cut: HF keeps every token equal to the k-th value. (Ties are left out of
        # top-p cases, where torch.sort leaves the order of equal values unspecified.)
        k = max(1, min(params["top_k"] or n_vocab, n_vocab))
        order = np.argsort(-row)
        row[order[min(k, n_vocab - 1)]] = row[order[k - 1]]
    return row, generated, params


def test_chat_defaults_distribution_matches_hf():
    rng = np.random.default_rng(1)
    for _ in range(6):
        row = (rng.normal(size=80) * 3).astype(np.float32)
        generated = rng.integers(0, 80, size=12).tolist()
        _check_distribution(row, generated, 20000, temperature=0.7, top_k=100, top_p=0.8, min_p=0.0, penalty=1.05)


def test_random_filter_chains_match_hf():
    rng = np.random.default_rng(2)
    for _ in range(40):
        row, generated, params = _random_case(rng)
        _check_distribution(row, generated, 20000, **params)


def test_top_p_cut_beyond_the_first_sorted_block():
    # 1200 near-equal tokens in a larger vocabulary, top-k off: HF keeps 1005 of them, far past the
    # first block the sampler sorts, so its quickselect must find the same boundary as a full sort.
    rng = np.random.default_rng(3)
    row = np.full(4000, -12.0, dtype=np.float32)
    row[:1200] = rng.normal(size=1200).astype(np.float32) * 0.3
    rng.shuffle(row)
    _check_distribution(row, [], 40000, temperature=1.0, top_k=0, top_p=0.9, min_p=0.0, penalty=1.0)


@pytest.mark.parametrize("top_k", [1, 3, 7])
def test_top_k_keeps_every_token_tied_with_the_kth(top_k):
    # HF removes scores < the k-th largest, so a token equal to the k-th value stays as well.
    row = np.linspace(2.0, 0.0, 10, dtype=np.float32)
    row[top_k] = row[top_k - 1]
    row = row[::-1].copy()  # the tie sits at lower ids than the larger values
    _check_distribution(row, [], 20000, temperature=1.0, top_k=top_k, top_p=1.0, min_p=0.0, penalty=1.0)


def test_greedy_is_argmax_after_repetition_penalty():
    rng = np.random.default_rng(4)
    for _ in range(60):
        n_vocab = int(rng.integers(10, 200))
        row = (rng.normal(size=n_vocab) * 3).astype(np.float32)
        generated = rng.integers(0, n_vocab, size=int(rng.integers(0, 20))).tolist()
        penalty = float(rng.choice([1.05, 1.2, 1.0, rng.uniform(0.5, 2.0)]))
        scores = _hf_processed(row, generated, do_sample=False, penalty=penalty)
        token = sample_token(row, generated, 0.0, 100, 0.8, 0.0, penalty, 0)
        assert token == int(np.argmax(scores))


def test_same_seed_same_tokens():
    rng = np.random.default_rng(5)
    rows = [(rng.normal(size=150) * 2).astype(np.float32) for _ in range(200)]
    first = [sample_token(r, [1, 2, 3], 0.7, 100, 0.8, 0.0, 1.05, 1234) for r in rows]
    again = [sample_token(r, [1, 2, 3], 0.7, 100, 0.8, 0.0, 1.05, 1234) for r in rows]
    assert first == again
    flat = np.zeros(50, dtype=np.float32)
    assert len({sample_token(flat, [], 1.0, 0, 1.0, 0.0, 1.0, s) for s in range(200)}) > 10


@pytest.mark.parametrize(
    "args, name",
    [
        ((float("nan"), 100, 0.8, 0.0, 1.05), "temperature"),
        ((0.7, 100, 1.5, 0.0, 1.05), "top_p"),
        ((0.7, 100, -0.1, 0.0, 1.05), "top_p"),
        ((0.7, 100, 0.8, 2.0, 1.05), "min_p"),
        ((0.7, 100, 0.8, 0.0, 0.0), "repetition_penalty"),
    ],
)
def test_bad_sampling_parameters_are_rejected(args, name):
    with pytest.raises(Exception, match=name):
        sample_token(np.zeros(8, dtype=np.float32), [], *args, 0)


# --- beam search against HF's _beam_search --------------------------------------------------------


class _ToyTable:
    """Logits as a function of the generated tokens: every distinct sequence seeds its own random row
    (a table indexed by the whole sequence), and the stop ids get a boost at some (sequence, length)
    points so that both endings occur. Rows never repeat, so two different paths cannot reach exactly
    equal scores: on exact ties torch.topk's order is an implementation detail nobody can match."""

    def __init__(self, rng, n_vocab, stop_ids, stop_at_length=None):
        self.n_vocab = n_vocab
        self.stop_at_length = stop_at_length  # (length, boost): every sequence of that length
        self.seed = int(rng.integers(0, 2**32))
        self.scale = float(rng.uniform(1.0, 4.0))
        self.stop_ids = stop_ids
        self.stop_boost = rng.choice([0.0, 0.0, 3.0, 6.0, 10.0], size=64).astype(np.float32)

    def __call__(self, history):
        gen = np.random.default_rng([self.seed, len(history), *history])
        row = (gen.normal(size=self.n_vocab) * self.scale).astype(np.float32)
        if self.stop_ids:
            row[self.stop_ids] += self.stop_boost[int(gen.integers(0, len(self.stop_boost)))]
            if self.stop_at_length and len(history) == self.stop_at_length[0]:
                row[self.stop_ids] = row.max() + self.stop_at_length[1] + gen.uniform(0.0, 1.0, len(self.stop_ids))
        return row


def _ours(toy, num_beams, penalty, length_penalty, max_new_tokens, stop_ids):
    beams = [[] for _ in range(num_beams)]

    def step_fn(parents, tokens):
        assert len(parents) == len(tokens) == num_beams
        beams[:] = [beams[p] + [t] for p, t in zip(parents, tokens)]
        return np.stack([toy(b) for b in beams]).astype(np.float32)

    params = core.BeamSearchParams()
    params.num_beams, params.repetition_penalty, params.length_penalty = num_beams, penalty, length_penalty
    return core._testing.beam_search_toy(step_fn, toy([]), params, max_new_tokens, stop_ids)


def _hf(toy, num_beams, penalty, length_penalty, max_new_tokens, stop_ids):
    out = _hf_generate(
        toy,
        toy.n_vocab,
        do_sample=False,
        num_beams=num_beams,
        repetition_penalty=float(penalty),
        length_penalty=float(length_penalty),
        max_new_tokens=max_new_tokens,
        eos_token_id=stop_ids or None,
    )
    tokens = out[0].tolist()
    if tokens and tokens[-1] in stop_ids:
        tokens.pop()
    return tokens, len(tokens) < len(out[0])


def test_beam_search_matches_hf_on_random_toy_models():
    rng = np.random.default_rng(6)
    ended_by_stop = ended_by_length = 0
    for case in range(240):
        n_vocab = int(rng.integers(50, 201))
        stop_ids = rng.choice(n_vocab, size=int(rng.choice([2, 2, 2, 1, 0])), replace=False).tolist()
        num_beams = int(rng.choice([3, 3, 3, 2, 4, 1]))
        penalty = float(rng.choice([1.2, 1.2, 1.0, rng.uniform(0.7, 1.6)]))
        length_penalty = float(rng.choice([1.0, 1.0, rng.uniform(-1.0, 2.0)]))
        max_new_tokens = int(rng.integers(1, 40))
        toy = _ToyTable(rng, n_vocab, stop_ids)
        expected, by_stop = _hf(toy, num_beams, penalty, length_penalty, max_new_tokens, stop_ids)
        got = _ours(toy, num_beams, penalty, length_penalty, max_new_tokens, stop_ids)
        assert got == expected, (
            f"case {case}: beams {num_beams} penalty {penalty} length_penalty {length_penalty} "
            f"max_new_tokens {max_new_tokens} stop {stop_ids}"
        )
        ended_by_stop += by_stop
        ended_by_length += not by_stop
    assert ended_by_stop >= 40 and ended_by_length >= 40, (ended_by_stop, ended_by_length)


def test_beam_search_chat_defaults_long_run():
    # chat(sampling=False): 3 beams, penalty 1.2, two stop ids, replies long enough for the penalty
    # and the early-stop heuristic to matter.
    rng = np.random.default_rng(7)
    for _ in range(20):
        toy = _ToyTable(rng, 150, [148, 149])
        toy.stop_boost[:] = 0.0
        toy.stop_boost[int(rng.integers(0, 64))] = 8.0
        expected, _ = _hf(toy, 3, 1.2, 1.0, 120, [148, 149])
        assert _ours(toy, 3, 1.2, 1.0, 120, [148, 149]) == expected


def test_beam_search_when_every_beam_prefers_stopping():
    # At one length both stop ids top every beam's distribution, so 2 * num_beams of the best
    # candidates stop: only HF's (1 + n_stop) * num_beams candidates leave beams to continue with.
    rng = np.random.default_rng(8)
    for case in range(40):
        n_vocab = int(rng.integers(50, 150))
        stop_ids = rng.choice(n_vocab, size=2, replace=False).tolist()
        toy = _ToyTable(rng, n_vocab, stop_ids, stop_at_length=(int(rng.integers(1, 6)), float(rng.uniform(0.0, 3.0))))
        toy.stop_boost[:] = 0.0
        length_penalty = float(rng.choice([1.0, 2.0, 3.0]))
        expected, _ = _hf(toy, 3, 1.2, length_penalty, 30, stop_ids)
        assert _ours(toy, 3, 1.2, length_penalty, 30, stop_ids) == expected, f"case {case}"


def test_beam_search_keeps_one_spare_candidate_per_stop_id():
    # Hand-built so that the 4th..6th best continuations at step 2 include stop ids: with only
    # 2 * num_beams candidates the third running beam would be a stopped one, while HF's
    # (1 + 2 stop ids) * 3 = 9 candidates keep token 12, whose continuation wins at step 3.
    n_vocab, stop_ids = 50, [48, 49]
    rows = {
        (): {1: 0.0, 2: -0.3, 3: -1.5},
        (1,): {10: 0.0, 48: -0.05, 49: -0.06},
        (2,): {11: 0.0, 48: -0.05, 49: -0.06},
        (3,): {12: 0.0},
        (3, 12): {48: 0.0},
    }

    def toy(history):
        spec = rows.get(tuple(history))
        if spec is None:  # everything else: a flat distribution
            return np.zeros(n_vocab, dtype=np.float32)
        row = np.full(n_vocab, -20.0, dtype=np.float32)
        for token, value in spec.items():
            row[token] = value
        return row

    toy.n_vocab = n_vocab
    expected, _ = _hf(toy, 3, 1.2, 1.0, 10, stop_ids)
    assert expected == [3, 12]
    assert _ours(toy, 3, 1.2, 1.0, 10, stop_ids) == expected
