"""Length groups: how the head splits a batch of docs of very different lengths.

The head's loops over time (the BiLSTM, Viterbi, the forward-backward behind
the entity probabilities) advance all sequences of a batch together, one step
per position of its longest doc, and its dense work (padding, emissions, the
probabilities' per-position terms) runs over every padded position. A batch of
CoNLL articles (2 to 1,300 tokens) pads most rows far beyond their length.
`length_groups` cuts the docs, sorted by length, into consecutive groups that
minimise  sum over groups of longest x (step_cost + docs)  (loop steps priced in
padded positions), exactly, by dynamic programming; `architectures.py` runs the
head once per group. Grouping changes no result: every sequence is computed on
its own (tests/pipeline/test_pipelines.py compares grouped and ungrouped annotations).
"""

from typing import List, Optional, Sequence

import numpy

MIN_PADDED_POSITIONS = 1 << 17
MAX_PADDING_FACTOR = 4
# The cost of one step of the head's loops over time (the LSTM, Viterbi and the
# forward-backward advance all sequences of a group together, one step per
# position of its longest doc), in padded positions' worth of the dense work
# (padding, emissions, the marginals' per-position terms). Measured on CPU
# (about 150 us per step against 2-3 us per padded position, 1 thread); on a
# GPU a step is a few kernel launches and dense work is cheap, so fewer groups.
STEP_COST_CPU = 64
STEP_COST_GPU = 4096
# On a GPU the whole group's dense work is resident at once (Viterbi's meet-in-the-middle keeps
# positions x K x (K+1) candidate scores; the probabilities four float64 [T, 2, K, B] stacks), so a
# group of several docs is also capped in padded positions: at 2^19, about 0.2 GB of candidates for BIO
# (K = 9) and 0.6 GB for BILUO (K = 17). On CPU the decoders stream and no cap applies.
MAX_GROUP_POSITIONS_GPU = 1 << 19


def length_groups(
    lengths: Sequence[int], step_cost: int = STEP_COST_CPU, max_positions: Optional[int] = None
) -> List[List[int]]:
    """Doc indices grouped so the head's work is least: docs sorted by
    decreasing length are cut into consecutive groups, a group costing
    longest x (step_cost + its docs) (its loop steps plus its padded
    positions), the cuts chosen by dynamic programming; no group of more
    than one doc pads beyond MAX_PADDING_FACTOR x its real tokens or
    MIN_PADDED_POSITIONS, whichever is larger, nor beyond `max_positions`
    padded positions where given (memory). A batch of similar
    lengths stays one group; a 50,000-token doc among short ones does not
    pad them all to 50,000; ordinary batches of CoNLL articles (lengths
    from 20 to 1,300 tokens) are cut into a few groups."""
    n = len(lengths)
    order = sorted(range(n), key=lambda i: -lengths[i])
    L = numpy.asarray([lengths[i] for i in order], dtype="float64")
    real = numpy.concatenate([[0.0], numpy.cumsum(L)])
    best = numpy.full(n + 1, numpy.inf)
    best[0] = 0.0
    cut = numpy.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):
        i = numpy.arange(j)
        size = j - i
        padded = L[:j] * size
        fits = padded <= numpy.maximum(MAX_PADDING_FACTOR * (real[j] - real[:j]), MIN_PADDED_POSITIONS)
        if max_positions is not None:
            fits &= padded <= max_positions
        fits |= size == 1
        cost = numpy.where(fits, best[:j] + L[:j] * (step_cost + size), numpy.inf)
        cut[j] = int(numpy.argmin(cost))
        best[j] = cost[cut[j]]
    bounds = [n]
    while bounds[-1] > 0:
        bounds.append(cut[bounds[-1]])
    bounds = bounds[::-1]
    groups = [[order[k] for k in range(a, b)] for a, b in zip(bounds[:-1], bounds[1:])]
    if len(groups) == 1:
        return [list(range(n))]  # keep the batch order: nothing to gain
    return groups
