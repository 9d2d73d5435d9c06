"""Viterbi decoding of the linear-chain CRF: the best path, and the k best.

Two decoders of the best path, the same contract: `viterbi_meet_in_middle` runs
a forward and a backward max-product pass side by side that meet in the middle
(T // 2 steps of two ops each) and reads both halves of each path off one
pointer table; `viterbi_stepwise` keeps one step's candidates at a time and
recomputes the chosen tag's backpointer while backtracking, which streams less
memory for large batches on CPU. `viterbi` picks one; `nbest` keeps the k best
partial paths per tag. Everything stays on the emissions' device; no host sync.
"""

import functools
from typing import List, Tuple

import torch
from torch import Tensor

from .forward_backward import NEG_INF, VIEW_CHUNK, at_positions

# The meet-in-the-middle decoder keeps every step's candidate scores (about (T-1) K^2 B floats) for
# one bulk backpointer pass. On CPU it is used while they are at most this many; above it the stepwise
# decoder streams less memory and is faster (docs/crf.md has the measurements). Off CPU
# meet-in-the-middle is always used.
VITERBI_BULK_MAX = 1 << 19


def viterbi(emissions: Tensor, mask: Tensor, trans: Tensor, start: Tensor, end: Tensor) -> Tuple[Tensor, Tensor]:
    """Best path per sequence.

    emissions (Tensor): [B, T, K] in the compute dtype; mask (Tensor): [B, T] bool, right-padded.
    trans, start, end (Tensor): [K, K], [K], [K] constrained scores (-inf: disallowed).
    RETURNS (Tuple[Tensor, Tensor]): scores [B] (0 for empty sequences) and
        paths [B, T] long, -1 past each length. Ties go to the lower tag index."""
    B, T, K = emissions.shape
    if T == 0:
        return emissions.new_zeros(B), torch.full((B, 0), -1, dtype=torch.long, device=emissions.device)
    last = torch.add(mask.sum(dim=1), -1)  # [B]; -1 for empty sequences
    emT = emissions.permute(1, 2, 0).contiguous()  # [T, K, B]
    if emT.device.type != "cpu" or (T - 1) * K * K * B <= VITERBI_BULK_MAX:
        best_score, tags = viterbi_meet_in_middle(emT, trans, start, end, last)
    else:
        best_score, tags = viterbi_stepwise(emT, trans, start, end, last)
    return torch.where(last > -1, best_score, 0.0), torch.where(mask, tags.t(), -1)


def argmax_code(cand: Tensor, best: Tensor, dim: int, desc: Tensor) -> Tensor:
    """K-1-argmax over ``dim`` of ``cand`` (overwritten; K = its size there),
    given ``best``, its max over ``dim`` (keepdim), bitwise as `torch.amax`
    returned it, and ``desc`` = K-1, ..., 0 along ``dim`` in the integer type
    of cand's width; ties go to the lower index. Faster than ``max(dim).indices``
    or comparisons on CPU: ``cand - best`` is +0 exactly at the maxima and has
    its sign bit set everywhere else, which an arithmetic shift of its bits
    turns into 0 and -1. (A row that is all -inf gives NaN: its code is then
    arbitrary, -1 included, for the caller to clamp; such a row is never on a
    path of finite score.)"""
    bits = cand.sub_(best).view(desc.dtype)
    bits.bitwise_right_shift_(torch.iinfo(desc.dtype).bits - 1)  # 0 at a max, -1 elsewhere
    bits.bitwise_or_(desc)  # K-1-i at a max
    return bits.amax(dim)


@functools.lru_cache(maxsize=64)
def _meet_in_middle_indices(T: int, K: int, B: int, device: torch.device, dtype: torch.dtype) -> Tuple[Tensor, ...]:
    """Index constants of `viterbi_meet_in_middle` for one shape (immutable, so cached)."""
    n, W = T // 2, 2 * B
    ar_w = torch.arange(W, device=device)
    em_pos = torch.arange(T - 1, T - 1 - n, -1, device=device).view(n, 1)  # emissions of backward step k: T-k
    # the sequence's last position for which step k's extra candidate holds the end weights:
    # T-1-k for the backward columns, never (-2) for the forward ones
    end_at = torch.cat([torch.full((n, B), -2, device=device), (em_pos - 1).expand(n, B)], 1).unsqueeze(1)  # [n, 1, W]
    desc = torch.arange(K, -1, -1, device=device, dtype={torch.float32: torch.int32, torch.float64: torch.int64}[dtype])
    base = (torch.arange(n, device=device) * (K * W) + K * W).view(n, 1, 1) + ar_w  # pointer of row k-1, tag K - code
    row0 = torch.arange(K * W, device=device).view(K, W)  # row 0 points to itself
    start = torch.cat([ar_w[:B], (T - 1 - n) * K * W + ar_w[B:]])  # trail starts, before the row and tag terms
    neg_p = -torch.arange(n + 1, device=device).view(n + 1, 1)
    zeros = torch.zeros(B, dtype=torch.long, device=device)
    return em_pos, end_at, desc.view(1, 1, K + 1, 1), base, row0, start, neg_p, zeros


def viterbi_meet_in_middle(
    emT: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor
) -> Tuple[Tensor, Tensor]:
    """Viterbi from both ends at once: (best scores [B], tags [T, B]) for
    time-major emissions emT [T, K, B], scores with disallowed entries -inf, and
    each sequence's last position ``last`` [B] (-1 if empty). Past a sequence's
    end its tags are arbitrary in-range values.

    A forward pass from position 0 and a backward pass from each sequence's
    end run side by side in one batch of 2B columns, n = T // 2 steps of two
    ops each, and meet at position n; the two halves of the path are then read
    off one pointer table, again n steps. Every step's candidate scores are
    laid out [K(out), K+1(reduced), 2B], the extra candidate carrying the end
    weights into the backward pass at each sequence's own last position (and
    -inf elsewhere), so ragged batches need no alignment. (Written with few
    distinct ops: right after an encoder, each different op costs extra.)"""
    T, K, B = emT.shape
    n, W = T // 2, 2 * B
    em_pos, end_at, desc, base, row0, trail_start, neg_p, zeros = _meet_in_middle_indices(
        T, K, B, emT.device, emT.dtype
    )
    last2 = torch.cat([last, last])
    # candidates: forward step k (position k): [j, i] = trans(i, j) + em_k(j); backward step k
    # (position T-1-k): [i, j] = trans(i, j) + em_{T-k}(j), -inf past the end, and column K = the
    # end weight of i where T-1-k is the sequence's last position
    cand = emT.new_empty(n, K, K + 1, W)
    torch.add(emT[1 : n + 1].unsqueeze(2), trans.t().view(1, K, K, 1), out=cand[:, :, :K, :B])
    em_next = torch.where((em_pos > last).unsqueeze(1), NEG_INF, emT.flip(0)[:n])  # [n, K, B]
    torch.add(em_next.unsqueeze(1), trans.view(1, K, K, 1), out=cand[:, :, :K, B:])
    cand[:, :, K] = torch.where(end_at == last2, end.view(1, K, 1), NEG_INF)
    # states: st[k][:K] = forward max-scores at position k | backward max-scores at position T-1-k
    st = emT.new_empty(n + 1, K + 1, W)
    st[:, K] = 0.0
    torch.add(emT[0], start.unsqueeze(1), out=st[0, :K, :B])
    st[0, :K, B:] = torch.where(last == T - 1, end.unsqueeze(1), NEG_INF)
    s_in, s_out = st.unsqueeze(1), st[:, :K]
    for a in range(0, n, VIEW_CHUNK):
        b = min(a + VIEW_CHUNK, n)
        for c, s_prev, s_next in zip(cand[a:b].unbind(0), s_in[a:b].unbind(0), s_out[a + 1 : b + 1].unbind(0)):
            c.add_(s_prev)
            torch.amax(c, 1, False, out=s_next)
    # join at position n, or at the last position of sequences that end before it
    at = last.clamp(0, n)
    fwd_at = at_positions(st[:, :K, :B], at)
    joined = fwd_at + torch.where(last > n - 1, st[T - 1 - n, :K, B:], end.unsqueeze(1))
    best_score, tag = joined.max(dim=0)  # [B]: the best score, and the tag at `at`
    # pointer table over the slots (k, j, col) of st: a forward slot points to the best previous
    # tag, a backward slot to the best next tag, both in row k-1; row 0 points to itself
    ptr = row0.new_empty(n + 1, K, W)
    ptr[0] = row0
    if n:
        code = argmax_code(cand, st[1:, :K].unsqueeze(2), 2, desc)  # K - argmax
        torch.add(base, code.clamp(min=1), alpha=-W, out=ptr[1:])  # never the extra column
    ptr = ptr.view(-1)
    pos = torch.add(torch.add(trail_start, torch.cat([at, zeros]), alpha=K * W), torch.cat([tag, tag]), alpha=W)
    trail = [pos]
    for _ in range(n):
        pos = ptr.take(pos)
        trail.append(pos)
    tags = torch.stack(trail).div_(W, rounding_mode="floor").remainder_(K)  # [n+1, 2B]
    # forward: trail k holds position at-k; backward: trail k holds position n+k
    fwd = tags[:, :B].gather(0, torch.add(at, neg_p).clamp(min=0))
    return best_score, torch.cat([fwd, tags[1 : T - n, B:]])


def viterbi_stepwise(emT: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor) -> Tuple[Tensor, Tensor]:
    """Viterbi for large batches on CPU: (best scores [B], tags [T, B]), same
    contract as `viterbi_meet_in_middle`. The forward pass keeps one small
    candidate buffer (streams less memory than storing every step's
    candidates); backpointers are recomputed while backtracking, for the chosen
    tag only, as one [K, B] argmax per step."""
    T, K, B = emT.shape
    scores = torch.empty_like(emT)  # scores[t][j, b]: best score of a path ending in tag j at t
    torch.add(emT[0], start.unsqueeze(1), out=scores[0])
    trans_ji = trans.t().unsqueeze(2)  # [K(next), K(prev), 1]
    buf = emT.new_empty(K, K, B)
    s_in = scores.unsqueeze(1)
    for a in range(1, T, VIEW_CHUNK):
        b = min(a + VIEW_CHUNK, T)
        for s_prev, s_next, e in zip(s_in[a - 1 : b - 1].unbind(0), scores[a:b].unbind(0), emT[a:b].unbind(0)):
            torch.add(s_prev, trans_ji, out=buf)
            torch.amax(buf, 1, False, out=s_next).add_(e)
    final = at_positions(scores, last.clamp(min=0)) + end.unsqueeze(1)
    best_score, best_last = final.max(dim=0)  # [B]
    # tags[t] is the best path's tag at t for t <= last, its last tag above
    reaches = last.unsqueeze(0) >= torch.arange(T, device=emT.device).unsqueeze(1)  # [T, B]
    tags = torch.empty(T, B, dtype=torch.long, device=emT.device)
    tags[T - 1] = best_last
    for b in range(T - 1, 0, -VIEW_CHUNK):  # t = b, b-1, ..., a+1: tags[t] -> tags[t-1]
        a = max(b - VIEW_CHUNK, 0)
        steps = zip(
            scores[a:b].unbind(0), tags[a + 1 : b + 1].unbind(0), tags[a:b].unbind(0), reaches[a + 1 : b + 1].unbind(0)
        )
        for s_prev, t_next, t_prev, reach in reversed(list(steps)):
            prev = (s_prev + trans.index_select(1, t_next)).max(dim=0).indices
            torch.where(reach, prev, best_last, out=t_prev)
    return best_score, tags


def nbest(em: Tensor, mask: Tensor, trans: Tensor, start: Tensor, end: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The k best paths, best first.

    em (Tensor): [B, T, K] emissions (padding 0); mask (Tensor): [B, T] bool.
    trans, start, end (Tensor): [K, K], [K], [K] constrained scores.
    k (int): how many paths per sequence (>= 1).
    RETURNS (Tuple[Tensor, Tensor]): scores [B, k] and paths [B, k, T], -1 past
        each length. Where fewer than k allowed paths exist the rest score -inf
        and their paths are -1; an empty sequence has one path, of score 0."""
    B, T, K = em.shape
    if T == 0:
        scores = em.new_full((B, k), NEG_INF)
        scores[:, 0] = 0.0
        return scores, torch.full((B, k, 0), -1, dtype=torch.long, device=em.device)
    lengths = mask.sum(dim=1)
    em_t = em.transpose(0, 1)
    # score[t]: [B, K, k] the k best partial paths ending in each tag
    score = em.new_full((B, K, k), NEG_INF)
    score[:, :, 0] = start + em_t[0]
    history = [score]
    bps: List[Tensor] = []  # bps[t-1][b, j, r] = flat index prev_tag * k + prev_rank
    for t in range(1, T):
        cand = score.unsqueeze(3) + trans.view(1, K, 1, K)  # [B, K(prev), k, K(next)]
        cand = cand.reshape(B, K * k, K)
        top, idx = cand.topk(k, dim=1)  # [B, k, K]
        new = top.transpose(1, 2) + em_t[t].unsqueeze(2)  # [B, K, k]
        keep = mask[:, t].view(B, 1, 1)
        score = torch.where(keep, new, score)
        bps.append(idx.transpose(1, 2))
        history.append(score)
    last = (lengths - 1).clamp(min=0)
    stacked = torch.stack(history, 1)  # [B, T, K, k]
    final = stacked.gather(1, last.view(B, 1, 1, 1).expand(B, 1, K, k)).squeeze(1) + end.view(1, K, 1)
    best, flat = final.reshape(B, K * k).topk(k, dim=1)  # [B, k]
    tag = torch.div(flat, k, rounding_mode="floor")
    rank = flat % k
    paths = torch.full((B, k, T), -1, dtype=torch.long, device=em.device)
    for t in range(T - 1, -1, -1):
        active = (t <= last).view(B, 1)
        paths[:, :, t] = torch.where(active, tag, paths[:, :, t])
        if t == 0:
            break
        prev = bps[t - 1].gather(1, tag.unsqueeze(2).expand(B, k, k)).gather(2, rank.unsqueeze(2)).squeeze(2)
        tag = torch.where(active, torch.div(prev, k, rounding_mode="floor"), tag)
        rank = torch.where(active, prev % k, rank)
    valid = torch.isfinite(best)
    paths = paths.masked_fill(~valid.unsqueeze(2) | ~mask.unsqueeze(1), -1)
    empty_scores = torch.full_like(best, NEG_INF)
    empty_scores[:, 0] = 0.0
    best = torch.where((lengths == 0).unsqueeze(1), empty_scores, best)
    return best, paths
