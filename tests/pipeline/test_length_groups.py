"""Length groups: the cheapest cut and bounded padding (that grouping changes no
annotation: tests/pipeline/test_pipelines.py::test_a_long_doc_among_short_ones_gives_the_same_annotations)."""

import itertools
import random

from conll_crf.pipeline.length_groups import (
    MAX_GROUP_POSITIONS_GPU,
    MAX_PADDING_FACTOR,
    MIN_PADDED_POSITIONS,
    length_groups,
)


def test_length_groups_bound_the_padding():
    assert length_groups([300, 1320, 250, 280]) == [[0, 1, 2, 3]]  # no cut pays: one group, batch order
    lengths = [20] * 30 + [50000] + [25] * 33
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        padded = len(g) * max(lengths[i] for i in g)
        assert padded <= max(MAX_PADDING_FACTOR * sum(lengths[i] for i in g), MIN_PADDED_POSITIONS)
    assert len(groups) == 2 and 30 in groups[0]
    assert length_groups([]) == []
    # the GPU's cap: many long docs of one length are split so no group holds more than its padded positions
    groups = length_groups([20000] * 64, 4096, MAX_GROUP_POSITIONS_GPU)
    assert all(20000 * len(g) <= MAX_GROUP_POSITIONS_GPU for g in groups) and len(groups) == 3
    assert length_groups([20000] * 64, 4096) == [list(range(64))]  # no cap on CPU: one group
    assert length_groups([600000, 5], 4096, MAX_GROUP_POSITIONS_GPU) == [[0], [1]]  # one doc is never split


def test_length_groups_are_the_cheapest_cut():
    """The dynamic programme finds the cheapest consecutive cut of the sorted lengths (brute force over all cuts)."""
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.choice([0, 1, 5, 20, 60, 200, 900]) + rng.randrange(5) for _ in range(rng.randrange(1, 8))]
        step = rng.choice([1, 16, 64, 500])
        cost = lambda groups: sum(max(lengths[i] for i in g) * (step + len(g)) for g in groups)  # noqa: E731
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        best = min(
            cost([order[a:b] for a, b in zip((0,) + cuts, cuts + (len(order),))])
            for r in range(len(order))
            for cuts in itertools.combinations(range(1, len(order)), r)
        )
        groups = length_groups(lengths, step)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert cost(groups) == best
    # with a cap on a group's padded positions (the GPU's memory): still the cheapest cut among those that fit it
    for _ in range(200):
        lengths = [rng.choice([1, 5, 20, 60, 200]) + rng.randrange(5) for _ in range(rng.randrange(1, 8))]
        cap = rng.choice([50, 200, 600])
        cost = lambda groups: sum(max(lengths[i] for i in g) * (16 + len(g)) for g in groups)  # noqa: E731
        fits = lambda g: len(g) == 1 or max(lengths[i] for i in g) * len(g) <= cap  # noqa: E731
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        best = min(
            cost(gs)
            for r in range(len(order))
            for cuts in itertools.combinations(range(1, len(order)), r)
            for gs in [[order[a:b] for a, b in zip((0,) + cuts, cuts + (len(order),))]]
            if all(fits(g) for g in gs)
        )
        groups = length_groups(lengths, 16, cap)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert all(fits(g) for g in groups) and cost(groups) == best
    # a batch of CoNLL articles of very different lengths is cut; similar lengths are not
    assert len(length_groups([1174] * 4 + [150] * 60)) == 2
    assert length_groups([300, 280, 310, 295]) == [[0, 1, 2, 3]]
