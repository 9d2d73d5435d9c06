"""Length buckets: how the head splits a batch of ragged sequences before the
CRF's entity probabilities.

The forward-backward recursions behind the probabilities cost, per batch, one
fixed amount per time step (a few small tensor operations, whatever the batch
width) plus one amount per padded position (the vectorised work before and
after the recursions, on [B, T, K] float64 tensors). A batch of documents of
very different lengths (CoNLL articles run from 2 to over 1,300 tokens) pads
every row to the longest one, so most of that second part is spent on padding.
Splitting the batch into groups of similar length trades padded positions for
extra time steps; `length_buckets` picks the split that minimises

    sum over groups g of  max_len(g) * (step_cost + len(g))

(`step_cost`: the cost of one time step in padded positions) over the splits
whose groups are contiguous in length order, exactly, by dynamic programming.

Grouping changes nothing a sequence's results depend on: every sequence is
computed on its own in any batch (`tests/test_component.py` checks batch
invariance end to end; `tests/test_buckets.py` checks the split head against
one group). On CPU one step of the recursions costs about as much as 16
padded positions (the packaged cpu_crf model on the dev articles, batches of 64:
`scripts/bench_buckets.py` times the choices side by side); on a GPU a step is kernel launches and positions
are nearly free, so the head does not split there.
"""
from typing import List, Sequence

import numpy

CPU_STEP_COST = 16.0


def length_buckets(lengths: Sequence[int], step_cost: float = CPU_STEP_COST) -> List[List[int]]:
    """Groups of indices into ``lengths`` (the non-empty sequences only; each
    group longest first, ties in index order; groups longest first) that
    minimise sum_g max_len(g) * (step_cost + len(g)). ``step_cost`` inf: one
    group. Empty sequences (length 0) are in no group: they have no entities."""
    if step_cost < 0:
        raise ValueError(f"step_cost must be >= 0, got {step_cost}")
    lengths = numpy.asarray(lengths, dtype=numpy.int64)
    order = numpy.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]
    n = len(order)
    if n == 0:
        return []
    if not numpy.isfinite(step_cost):
        return [order.tolist()]
    L = lengths[order].astype(numpy.float64)
    best = numpy.zeros(n + 1)  # best[j]: cost of grouping order[j:]
    cut = numpy.empty(n, dtype=numpy.int64)  # the group starting at j ends before cut[j]
    for j in range(n - 1, -1, -1):
        cost = L[j] * (step_cost + numpy.arange(1, n - j + 1)) + best[j + 1 :]
        k = int(numpy.argmin(cost))
        best[j], cut[j] = cost[k], j + 1 + k
    groups, j = [], 0
    while j < n:
        groups.append(order[j : cut[j]].tolist())
        j = int(cut[j])
    return groups
