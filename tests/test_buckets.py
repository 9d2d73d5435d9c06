"""Length buckets: the split is optimal among contiguous splits, and the head's
entity probabilities are the same whatever the split."""
import itertools

import numpy
import pytest
import torch

import conll_crf.layers as layers
from conll_crf.buckets import length_buckets
from conll_crf.layers import BiLSTMCRFModule
from conll_crf.tags import build_tags


def cost(groups, lengths, step_cost):
    return sum(max(lengths[i] for i in g) * (step_cost + len(g)) for g in groups)


def contiguous_splits(order):
    n = len(order)
    for cuts in itertools.product([False, True], repeat=max(n - 1, 0)):
        groups, current = [], [order[0]]
        for i, cut in enumerate(cuts, 1):
            if cut:
                groups.append(current)
                current = []
            current.append(order[i])
        groups.append(current)
        yield groups


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("step_cost", [0.0, 1.0, 4.0, 16.0, 100.0])
def test_buckets_partition_and_minimise_cost(seed, step_cost):
    rng = numpy.random.default_rng(seed)
    lengths = rng.integers(0, 40, size=rng.integers(1, 10)).tolist()
    groups = length_buckets(lengths, step_cost)
    flat = [i for g in groups for i in g]
    assert sorted(flat) == [i for i, n in enumerate(lengths) if n > 0]  # every non-empty sequence once
    assert [lengths[i] for i in flat] == sorted((n for n in lengths if n > 0), reverse=True)
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
    if order:
        best = min(cost(g, lengths, step_cost) for g in contiguous_splits(order))
        assert cost(groups, lengths, step_cost) == pytest.approx(best)


def test_buckets_edge_cases():
    assert length_buckets([]) == []
    assert length_buckets([0, 0]) == []
    assert length_buckets([3, 0, 5], float("inf")) == [[2, 0]]
    assert length_buckets([5, 5, 5], 16.0) == [[0, 1, 2]]  # equal lengths: splitting only adds steps
    assert length_buckets([1000, 2, 2, 2], 16.0) == [[0], [1, 2, 3]]
    with pytest.raises(ValueError):
        length_buckets([1], -1.0)


def head(scheme, seed=0):
    torch.manual_seed(seed)
    module = BiLSTMCRFModule(hidden_width=8, depth=1, dropout=0.0)
    module.build(6, build_tags(["LOC", "MISC", "PER"], scheme), scheme)
    with torch.no_grad():
        for p in module.crf.parameters():
            p.normal_()
    return module.eval()


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_head_confidence_does_not_depend_on_the_split(scheme, monkeypatch):
    module = head(scheme)
    lengths = torch.tensor([37, 0, 1, 2, 120, 3, 37, 5, 0, 64, 9])
    x = torch.randn(int(lengths.sum()), 6, generator=torch.Generator().manual_seed(1)) * 3
    results = {}
    for step_cost in (0.0, 16.0, float("inf")):
        monkeypatch.setattr(layers, "CPU_STEP_COST", step_cost)
        with torch.no_grad():
            results[step_cost] = module(x, lengths, confidence=(0.01, 1.3))
    assert len(length_buckets(lengths.tolist(), 0.0)) > 2  # the split really differs
    ref = results[float("inf")]
    assert len(ref[1]) > 0 and len(ref[3]) > len(ref[1])
    for got in results.values():
        torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)  # paths
        torch.testing.assert_close(got[1], ref[1], rtol=0, atol=0)  # the paths' entities, sorted
        torch.testing.assert_close(got[3], ref[3], rtol=0, atol=0)  # candidates, sorted
        torch.testing.assert_close(got[2], ref[2], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(got[4], ref[4], rtol=1e-12, atol=1e-13)


def test_head_confidence_all_empty():
    module = head("BIO")
    with torch.no_grad():
        paths, ents, probs, cands, cand_probs = module(torch.zeros(0, 6), torch.tensor([0, 0]), confidence=(0.1, 1.0))
    assert paths.shape == (2, 0) and ents.shape == (0, 4) and cands.shape == (0, 4)
    assert probs.numel() == 0 and cand_probs.numel() == 0
