"""Exact entity marginals of the CRF against brute-force enumeration of every path."""

import functools
import itertools

import pytest
import torch

from conll_crf.crf import LinearChainCRF
from conll_crf.tags import build_tags, iob_spans, strict_spans

LABELS = ["LOC", "PER"]  # the order of build_tags (sorted), so label index = position here


def make_crf(scheme, seed=0):
    torch.manual_seed(seed)
    crf = LinearChainCRF.from_tags(build_tags(LABELS, scheme), scheme).double()
    with torch.no_grad():
        for p in (crf.transitions, crf.start_transitions, crf.end_transitions):
            p.normal_()
    return crf


def ragged_batch(K, lengths, seed=0, impossible=()):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    em = torch.randn(len(lengths), T, K, generator=g, dtype=torch.float64) * 2
    for b, t, k in impossible:
        em[b, t, k] = float("-inf")
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    return em, mask


def brute_force(crf, scheme, em, mask, temperature=1.0):
    """{(b, start, end, label index): P(entity)} and the expected entity count per
    sequence, by scoring every tag path (all of them in one batched call)."""
    tags = build_tags(LABELS, scheme)
    K, T = len(tags), em.size(1)
    marginals, expected = {}, []
    for b in range(em.size(0)):
        L = int(mask[b].sum())
        paths = list(itertools.product(range(K), repeat=L))
        padded = torch.zeros(len(paths), T, dtype=torch.long)
        if L:
            padded[:, :L] = torch.tensor(paths, dtype=torch.long)
        with torch.no_grad():
            scores = crf.score(
                em[b : b + 1].expand(len(paths), -1, -1), padded, mask[b : b + 1].expand(len(paths), -1), check=False
            )
        probs = torch.softmax(scores / temperature, 0).tolist()
        count = 0.0
        for path, p in zip(paths, probs):
            if p == 0.0:
                continue
            names = [tags[i] for i in path]
            spans = strict_spans(names, "BILUO") if scheme == "BILUO" else iob_spans(names)[0]
            for s, e, label in spans:
                key = (b, s, e, LABELS.index(label))
                marginals[key] = marginals.get(key, 0.0) + p
                count += p
        expected.append(count)
    return marginals, expected


CASES = [
    ([5, 0, 1, 3], ()),
    ([4, 4, 2], ((0, 1, 1), (0, 2, 3), (1, 0, 0), (2, 1, 0))),  # impossible tags, incl. O
    ([1], ()),
    ([6, 2], ((0, 3, 2), (0, 3, 4))),  # position 3 of seq 0 can only be O or B-*
]


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
@pytest.mark.parametrize("lengths,impossible", CASES)
def test_candidates_match_brute_force(scheme, lengths, impossible):
    crf = make_crf(scheme)
    em, mask = ragged_batch(crf.num_tags, lengths, impossible=impossible)
    want, expected = brute_force(crf, scheme, em, mask)
    spans, probs = crf.entity_candidates(em, mask, threshold=0.0)
    got = {tuple(r): p for r, p in zip(spans.tolist(), probs.tolist())}
    assert not torch.isnan(probs).any()
    for key in set(want) | set(got):
        assert got.get(key, 0.0) == pytest.approx(want.get(key, 0.0), abs=1e-6), key
    # a span the constraints forbid is never listed with a positive probability
    assert all(p > 0 for p in got.values())
    # identity: the sum of all entity marginals of a sequence is its expected number of entities
    for b, count in enumerate(expected):
        total = sum(p for key, p in got.items() if key[0] == b)
        assert total == pytest.approx(count, abs=1e-6)
    # sorted by sequence, start, end, label
    assert spans.tolist() == sorted(spans.tolist())


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_given_spans_and_threshold(scheme):
    crf = make_crf(scheme, seed=1)
    tags = build_tags(LABELS, scheme)
    starts_loc = [tags.index(t) for t in ("B-LOC", "U-LOC") if t in tags]
    em, mask = ragged_batch(crf.num_tags, [6, 3, 0, 5], seed=3, impossible=[(3, 2, k) for k in starts_loc])
    want, _ = brute_force(crf, scheme, em, mask)
    keys = sorted(want)
    p = crf.entity_probabilities(em, torch.tensor(keys), mask)
    assert p.tolist() == pytest.approx([want[k] for k in keys], abs=1e-6)
    # spans the constraints make impossible: exactly 0, not NaN
    impossible = [(3, 2, e, 0) for e in (3, 4, 5)]  # a LOC entity cannot start at position 2 of sequence 3
    for key in impossible:
        assert want.get(key, 0.0) == 0.0
        assert crf.entity_probabilities(em, torch.tensor([key]), mask).item() == 0.0
    # the threshold keeps exactly the spans at or above it, whatever their length
    spans, probs = crf.entity_candidates(em, mask, threshold=0.05)
    assert sorted(map(tuple, spans.tolist())) == sorted(k for k, v in want.items() if v >= 0.05)
    with pytest.raises(ValueError, match="out of range"):
        crf.entity_probabilities(em, torch.tensor([[1, 2, 4, 0]]), mask)  # past the end of sequence 1


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_temperature(scheme):
    crf = make_crf(scheme, seed=2)
    em, mask = ragged_batch(crf.num_tags, [4, 2], seed=5)
    want, _ = brute_force(crf, scheme, em, mask, temperature=2.5)
    spans, probs = crf.entity_candidates(em, mask, threshold=0.0, temperature=2.5)
    got = {tuple(r): p for r, p in zip(spans.tolist(), probs.tolist())}
    assert set(got) == {k for k, v in want.items() if v > 0}
    assert [got[k] for k in sorted(got)] == pytest.approx([want[k] for k in sorted(got)], abs=1e-6)
    with pytest.raises(ValueError):
        crf.entity_candidates(em, mask, temperature=0.0)


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_path_entities_decode_viterbi(scheme):
    tags = build_tags(LABELS, scheme)
    crf = make_crf(scheme, seed=4)
    em, mask = ragged_batch(crf.num_tags, [9, 0, 1, 7, 3], seed=7)
    paths = crf.viterbi(em, mask)[1]
    got = crf.path_entities(paths).tolist()
    want = []
    for b, row in enumerate(paths.tolist()):
        names = [tags[i] for i in row if i >= 0]
        spans = strict_spans(names, "BILUO") if scheme == "BILUO" else iob_spans(names)[0]
        want += [[b, s, e, LABELS.index(label)] for s, e, label in spans]
    assert got == want


def test_long_sequence_is_finite_and_normalised():
    """20,000 steps from float32 emissions: probabilities in [0, 1] to 1e-6 and
    equal to the log-space recursions' to 1e-6 (float64 sums of magnitude 1e5)."""
    import conll_crf.crf.entities as entities_module
    from conll_crf.crf.forward_backward import log_space_forward_backward

    crf = make_crf("BIO", seed=5)
    em, mask = ragged_batch(crf.num_tags, [20000, 3], seed=9)
    em = (em * 5).float()
    spans, probs = crf.entity_candidates(em, mask, threshold=0.1)
    assert torch.isfinite(probs).all() and (probs <= 1 + 1e-6).all() and len(spans) > 1000
    paths = crf.viterbi(em, mask)[1]
    ents = crf.path_entities(paths)
    p = crf.entity_probabilities(em, ents, mask)
    assert torch.isfinite(p).all() and (p > 0).all()
    fast = entities_module.log_forward_backward
    try:
        entities_module.log_forward_backward = log_space_forward_backward
        spans2, probs2 = crf.entity_candidates(em, mask, threshold=0.1)
    finally:
        entities_module.log_forward_backward = fast
    assert torch.equal(spans, spans2) and (probs - probs2).abs().max() < 1e-6


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_extreme_scores_take_the_log_space_path(scheme):
    """Scores spread beyond what the scaled recursions hold (1e3): the log-space
    recursions take over, still exact."""
    crf = make_crf(scheme, seed=6)
    em, mask = ragged_batch(crf.num_tags, [4, 3], seed=11)
    em = em * 400
    want, _ = brute_force(crf, scheme, em, mask)
    spans, probs = crf.entity_candidates(em, mask, threshold=0.0)
    got = {tuple(r): p for r, p in zip(spans.tolist(), probs.tolist())}
    for key in set(want) | set(got):
        assert got.get(key, 0.0) == pytest.approx(want.get(key, 0.0), abs=1e-6), key


def test_scaled_and_log_space_recursions_agree():
    from conll_crf.crf.forward_backward import (
        log_forward_backward as _log_forward_backward,
    )
    from conll_crf.crf.forward_backward import (
        log_space_forward_backward as _log_forward_backward_logspace,
    )

    crf = make_crf("BIO", seed=7)
    em, mask = ragged_batch(crf.num_tags, [300, 0, 1, 120], seed=13, impossible=((0, 5, 0), (3, 7, 2)))
    em = em.masked_fill(~mask.unsqueeze(2), 0.0)
    params = [p.detach() for p in crf._params(torch.float64)]
    last = mask.sum(1) - 1
    fast, slow = _log_forward_backward(em, *params, last), _log_forward_backward_logspace(em, *params, last)
    valid = mask.unsqueeze(2).expand_as(fast[0])
    for a, b in zip(fast[:2], slow[:2]):
        assert torch.equal(torch.isfinite(a)[valid], torch.isfinite(b)[valid])
        ok = torch.isfinite(b) & valid
        assert (a[ok] - b[ok]).abs().max() < 1e-9
    assert (fast[2] - slow[2]).abs().max() < 1e-9


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_a_batch_of_empty_sequences(scheme):
    crf = make_crf(scheme)
    em = torch.zeros(3, 0, crf.num_tags, dtype=torch.float64)
    mask = torch.zeros(3, 0, dtype=torch.bool)
    spans, probs = crf.entity_candidates(em, mask, threshold=0.0)
    assert spans.shape == (0, 4) and probs.shape == (0,)
    assert crf.entity_probabilities(em, torch.zeros(0, 4, dtype=torch.long), mask).shape == (0,)
    assert crf.path_entities(crf.viterbi(em, mask)[1]).shape == (0, 4)


def test_log0_matches_torch_log():
    """The fast log of the scaled recursions: exactly torch.log, -inf at 0 (and for denormals too)."""
    from conll_crf.crf.forward_backward import log0 as _log0

    x = torch.tensor([0.0, 5e-324, 1e-310, 2.2250738585072014e-308, 1e-300, 0.5, 1.0, 3.0], dtype=torch.float64)
    assert torch.equal(_log0(x), torch.log(x))
    assert torch.equal(_log0(x.float()), torch.log(x.float()))
    assert torch.equal(_log0(torch.zeros(0)), torch.zeros(0))


@functools.lru_cache(maxsize=None)
def _block_case(scheme):
    """A batch with a 6-token sequence and its brute-force entity marginals (computed once per scheme; 6 tokens
    spread over 2 to 6 blocks, and brute force over BILUO's 9^6 paths takes seconds where 9^7 took half a minute)."""
    crf = make_crf(scheme, seed=3)
    em, mask = ragged_batch(crf.num_tags, [6, 0, 1, 5, 2], seed=13, impossible=((0, 4, 0),))
    return crf, em, mask, brute_force(crf, scheme, em, mask)[0]


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
@pytest.mark.parametrize("block", [1, 2, 3])
@pytest.mark.parametrize("threshold", [0.0, 0.05])
def test_candidates_in_length_blocks_match_brute_force(monkeypatch, scheme, block, threshold):
    """The candidates' search extends lengths a block at once: blocks of 1, 2
    and 3 lengths (entities span several blocks) list exactly the spans brute
    force puts at or above the threshold, with their probabilities."""
    import conll_crf.crf.entities as crf_module

    monkeypatch.setattr(crf_module, "CANDIDATE_BLOCK", block)
    crf, em, mask, want = _block_case(scheme)
    spans, probs = crf.entity_candidates(em, mask, threshold=threshold)
    got = {tuple(r): p for r, p in zip(spans.tolist(), probs.tolist())}
    assert set(got) == {k for k, v in want.items() if v >= threshold and v > 0}
    for key, p in got.items():
        assert p == pytest.approx(want[key], abs=1e-6), key
    assert spans.tolist() == sorted(spans.tolist())


def test_candidates_do_not_depend_on_the_block_or_a_length_cap(monkeypatch):
    """On a larger random batch, every block size gives the same candidates;
    max_length keeps exactly those of at most that many tokens."""
    import conll_crf.crf.entities as crf_module

    crf = make_crf("BIO", seed=8)
    em, mask = ragged_batch(crf.num_tags, [60, 33, 1, 0, 47], seed=17)
    em = em * 0.3  # flat scores: long candidates above the threshold
    results = []
    for block in (1, 4, 8, 64):
        monkeypatch.setattr(crf_module, "CANDIDATE_BLOCK", block)
        results.append(crf.entity_candidates(em, mask, threshold=0.01))
    spans, probs = results[0]
    assert (spans[:, 2] - spans[:, 1]).max() > 8  # some candidates span more than one block of 8
    for other_spans, other_probs in results[1:]:
        assert torch.equal(spans, other_spans) and torch.allclose(probs, other_probs, rtol=0, atol=1e-12)
    capped, capped_p = crf.entity_candidates(em, mask, threshold=0.01, max_length=3)
    short = (spans[:, 2] - spans[:, 1]) <= 3
    assert torch.equal(capped, spans[short]) and torch.allclose(capped_p, probs[short], rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 400.0])  # the scaled recursions, and the log-space ones
def test_packed_forward_backward_is_the_padded_one_at_the_real_positions(scale):
    """The entity terms take the forward-backward variables packed ([N, K] over
    the real positions): the same values as the padded [B, T, K] ones there."""
    from conll_crf.crf.forward_backward import (
        log_forward_backward as _log_forward_backward,
    )

    crf = make_crf("BIO", seed=12)
    em, mask = ragged_batch(crf.num_tags, [5, 0, 1, 9, 3], seed=21, impossible=((3, 2, 0),))
    em = em * scale
    with torch.no_grad():
        trans, start, end = crf._params(torch.float64)
    last = mask.sum(1) - 1
    em = em.masked_fill(~mask.unsqueeze(2), 0.0)
    alpha, beta, log_z = _log_forward_backward(em, trans, start, end, last)
    rows = torch.nonzero(mask, as_tuple=True)
    alpha_p, beta_p, log_z_p = _log_forward_backward(em, trans, start, end, last, rows)
    assert alpha_p.shape == (int(mask.sum()), crf.num_tags)
    for padded, packed in ((alpha[rows], alpha_p), (beta[rows], beta_p), (log_z, log_z_p)):
        finite = torch.isfinite(padded)
        assert torch.equal(finite, torch.isfinite(packed))
        assert torch.allclose(padded[finite], packed[finite], rtol=0, atol=1e-9)
