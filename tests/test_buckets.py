"""Length groups: the cheapest cut and bounded padding (that grouping changes no
annotation: tests/test_pipelines.py::test_a_long_doc_among_short_ones_gives_the_same_annotations)."""
import itertools
import random

from conll_crf.buckets import MAX_PADDING_FACTOR, MIN_PADDED_POSITIONS, length_groups


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
    # a batch of CoNLL articles of very different lengths is cut; similar lengths are not
    assert len(length_groups([1174] * 4 + [150] * 60)) == 2
    assert length_groups([300, 280, 310, 295]) == [[0, 1, 2, 3]]

