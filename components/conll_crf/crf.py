"""A linear-chain conditional random field in PyTorch: exact, batched, constrained.

Shapes: B batch, T time (padded length), K tags. Emissions are ``[B, T, K]``,
masks ``[B, T]`` bool and right-padded (True for a sequence's positions, then
False). A sequence of length 0 is allowed: its log partition is 0 and its path
is empty.

Constraints (from->to transitions, allowed first tags, allowed last tags) are
buffers, not parameters: a disallowed transition is -inf in every computation,
so it is excluded from the partition function, the marginals and every decode,
and no amount of training can make it possible.

Training objective (`nll`, `log_partition`): one autograd Function computes
log Z and the gold path's score and, in its backward, the gradient from
forward-backward marginals, so autograd records no graph over the time loop.
The recursions run in scaled probability space in float64 (one matrix product
and one elementwise product per step); when the scores spread too far for that
to be exact (checked once per call), in log space instead (logsumexp). Either
way emissions of magnitude 1e3 and sequences of 10,000 steps are exact to
float32 precision, and fp16/bf16 emissions are upcast.

Decoding (`viterbi`): a forward and a backward max-product pass run side by
side and meet in the middle (T // 2 steps of two ops each); backpointers come
from the stored candidate scores in one pass, and both halves of each path are
read off one pointer table. `nbest` keeps the k best partial paths per tag.

Everything stays on the emissions' device. The one host synchronisation per
training call happens before the time loop; decoding has none.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import functools
import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .tags import MODEL_SCHEMES, split_tag

NEG_INF = float("-inf")


def transition_constraints(tags: Sequence[str], scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    """Allowed transitions for a tag list under ``BIO`` (IOB2) or ``BILUO``.

    Returns (allowed [K, K] bool, from tag i to tag j; allowed_start [K];
    allowed_end [K]). BIO: I-X only after B-X or I-X. BILUO: after B-X or I-X
    only I-X or L-X; I-X and L-X only after B-X or I-X; the sequence starts
    outside an entity and ends outside one.
    """
    if scheme not in MODEL_SCHEMES:
        raise ValueError(f"scheme must be one of {MODEL_SCHEMES}, not {scheme!r}")
    parsed = [split_tag(t) for t in tags]
    valid = set("BI") if scheme == "BIO" else set("BILU")
    for tag, (prefix, _) in zip(tags, parsed):
        if prefix != "O" and prefix not in valid:
            raise ValueError(f"tag {tag!r} does not belong to the {scheme} scheme")
    k = len(tags)
    allowed = torch.zeros(k, k, dtype=torch.bool)
    start = torch.zeros(k, dtype=torch.bool)
    end = torch.zeros(k, dtype=torch.bool)
    for j, (pj, lj) in enumerate(parsed):
        start[j] = pj in ("O", "B", "U")
        end[j] = pj in ("O", "L", "U") if scheme == "BILUO" else True
        for i, (pi, li) in enumerate(parsed):
            open_i = pi in ("B", "I")  # inside an unfinished entity
            if scheme == "BIO":
                ok = pj != "I" or (open_i and li == lj)
            elif open_i:
                ok = pj in ("I", "L") and li == lj
            else:
                ok = pj in ("O", "B", "U")
            allowed[i, j] = ok
    return allowed, start, end


def entity_labels(tags: Sequence[str]) -> List[str]:
    """The entity labels of a tag list, in the order of their B- tags."""
    return [label for prefix, label in map(split_tag, tags) if prefix == "B"]


def entity_tags(tags: Sequence[str], scheme: str) -> "EntityTags":
    """The tag indices of each label's B-, I- (and for BILUO L-, U-) tags."""
    index = {t: i for i, t in enumerate(tags)}
    labels = entity_labels(tags)
    try:
        get = lambda prefix: torch.tensor([index[f"{prefix}-{x}"] for x in labels], dtype=torch.long)  # noqa: E731
        if scheme == "BIO":
            return EntityTags(get("B"), get("I"))
        return EntityTags(get("B"), get("I"), get("L"), get("U"))
    except KeyError as err:
        raise ValueError(f"the tag list lacks {err.args[0]!r} for the {scheme} scheme: {list(tags)}") from None


def _lengths(mask: Tensor) -> Tensor:
    return mask.sum(dim=1)


def _check(emissions: Tensor, mask: Tensor, num_tags: int) -> None:
    if emissions.dim() != 3:
        raise ValueError(f"emissions must be [B, T, K], got shape {tuple(emissions.shape)}")
    if emissions.size(2) != num_tags:
        raise ValueError(f"emissions have {emissions.size(2)} tags, the CRF has {num_tags}")
    if mask.shape != emissions.shape[:2]:
        raise ValueError(f"mask must be [B, T] = {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")


RENORM_EVERY = 8


def _renormalise(values: Tensor) -> Tensor:
    """Subtract each row's max in place (rows that are all -inf are left as
    they are) and return the subtracted amounts [B]. Keeps running log-space
    values small, so float32 rounding does not grow with the sequence length."""
    c = values.amax(dim=1, keepdim=True)
    c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    values.sub_(c)
    return c.squeeze(1)


def _forward_alphas(em: Tensor, trans: Tensor, start: Tensor) -> Tuple[Tensor, Tensor]:
    """Log forward variables for every position from time-major emissions
    em [T, B, K]: (alphas [T, B, K], offsets [T, B]). The true forward value is
    alphas[t] + offsets[:t+1].sum(0): every RENORM_EVERY steps the alphas are
    shifted and the shift recorded. Positions past a sequence's end hold
    finite junk that callers never read (padding emissions are zeroed)."""
    T = em.size(0)
    alphas = torch.empty_like(em)
    offsets = em.new_zeros(T, em.size(1))
    alphas[0] = start + em[0]
    trans_b = trans.unsqueeze(0)
    for t in range(1, T):
        torch.add(torch.logsumexp(alphas[t - 1].unsqueeze(2) + trans_b, dim=1), em[t], out=alphas[t])
        if t % RENORM_EVERY == 0:
            offsets[t] = _renormalise(alphas[t])
    return alphas, offsets


def _log_z(alphas: Tensor, offsets: Tensor, end: Tensor, lengths: Tensor) -> Tensor:
    """log Z [B] from forward variables; 0 for empty sequences."""
    T, B, K = alphas.shape
    last = (lengths - 1).clamp(min=0)
    final = alphas.gather(0, last.view(1, B, 1).expand(1, B, K)).squeeze(0) + end
    upto = last.unsqueeze(0) >= torch.arange(T, device=alphas.device).unsqueeze(1)  # [T, B]
    shift = torch.where(upto, offsets, torch.zeros_like(offsets)).sum(0)
    log_z = torch.logsumexp(final, dim=1) + shift
    return torch.where(lengths > 0, log_z, torch.zeros_like(log_z))


def _backward_betas(em_rev: Tensor, trans: Tensor, end: Tensor) -> Tensor:
    """Log backward variables on end-aligned sequences: em_rev [T, B, K] holds
    each sequence shifted so that its last position is T-1. Returns betas
    [T, B, K] in the same layout, each position up to an additive constant per
    sequence (renormalised like the alphas; marginals do not depend on it)."""
    T = em_rev.size(0)
    betas = torch.empty_like(em_rev)
    betas[T - 1] = end.expand_as(betas[T - 1])
    trans_b = trans.unsqueeze(0)
    for t in range(T - 2, -1, -1):
        nxt = (em_rev[t + 1] + betas[t + 1]).unsqueeze(1)  # [B, 1, K]
        torch.logsumexp(trans_b + nxt, dim=2, out=betas[t])
        if t % RENORM_EVERY == 0:
            _renormalise(betas[t])
    return betas


# --- scaled probability space (the default) ------------------------------------------------
#
# With P_t = exp(e_t - max_j e_t) and E = exp(transitions - max), the forward
# recursion is a matrix product per step, renormalised every few steps:
#   alpha_t = (E^T alpha_{t-1}) * P_t / c_t,   log Z = sum_t log c_t + shifts.
# Layout: time-major, batch-last [T, K, B], so each step is one [K, K] @ [K, B]
# product and one product with P_t. Padding has P = 0, so the variables past a
# sequence's end are 0 and no per-sequence alignment is needed. Computed in
# float64: the renormalised values cannot underflow while the spread of scores
# inside one step stays below ~600 nats, which `_scaled_plan` checks once per
# call; otherwise the exact log-space path runs.

MAX_SCALED_SPREAD = 600.0
FLOAT64_LOG_RANGE = 650.0
MAX_RENORM_INTERVAL = 16
TINY = 1e-300


def _scaled_plan(em_range: float, p_range: float, num_tags: int) -> int:
    """How often the scaled recursions must renormalise (every n steps), or 0
    when the scores spread too far for float64 scaled arithmetic to be exact.

    ``em_range``: the largest range of finite emissions within one position;
    ``p_range``: the range of the finite transition, start and end scores.
    Per step, the scaled emissions and transitions are <= 1 and the largest
    entry loses at most spread + log K nats, where spread = em_range + p_range;
    inside one step no entry that matters lies more than 2 * spread below the
    largest. So n steps without renormalising stay within float64's range when
    n * (spread + log K) + 2 * spread + 2 * p_range (start and end) < 650."""
    spread, ends = em_range + p_range, 2 * p_range
    if not (2 * spread + ends < MAX_SCALED_SPREAD):  # also catches NaN
        return 0
    per_step = spread + math.log(num_tags) + 1.0
    return int(max(1, min(MAX_RENORM_INTERVAL, (FLOAT64_LOG_RANGE - 2 * spread - ends) // per_step)))


def _at(x: Tensor, pos: Tensor) -> Tensor:
    """x [T, K, B] at each sequence's position ``pos`` [B] (in range): [K, B]."""
    T, K, B = x.shape
    return x.gather(0, pos.view(1, 1, B).expand(1, K, B)).squeeze(0)


# The loops over time take their per-step views from unbind (several times cheaper than indexing
# per step) a chunk of steps at a time: holding a whole sequence's T views alive through a loop lets
# Python's cyclic GC move thousands of them per batch towards its old generation, whose full
# collections cost ~0.1 s each in a process that has loaded spaCy and torch.
VIEW_CHUNK = 64
# Entity lengths the candidates' search extends at once (most entities are shorter; longer ones take more blocks).
CANDIDATE_BLOCK = 8


def _scaled_forward(P: Tensor, E: Tensor, S: Tensor, every: int) -> Tuple[Tensor, Tensor]:
    """P [T, K, B] scaled emissions (0 on padding), E [K, K] scaled transitions,
    S [K] scaled start. Returns (alphas [T, K, B], c [T, 1, B]): the true forward
    value at t is alphas[t] times the product of c up to t (c is 1 except at the
    renormalised steps; a tiny positive number where everything is 0)."""
    T, K, B = P.shape
    alphas = torch.empty_like(P)
    c = P.new_ones(T, 1, B)
    a = torch.mul(P[0], S.unsqueeze(1), out=alphas[0])
    Et = E.t()
    for lo in range(1, T, VIEW_CHUNK):  # views a chunk at a time (see VIEW_CHUNK)
        hi = min(lo + VIEW_CHUNK, T)
        for t, a_t, p_t in zip(range(lo, hi), alphas[lo:hi].unbind(0), P[lo:hi].unbind(0)):
            prev, a = a, a_t
            torch.mm(Et, prev, out=a)
            a.mul_(p_t)
            if t % every == 0:
                ct = c[t]
                torch.sum(a, 0, keepdim=True, out=ct).clamp_(min=TINY)
                a.div_(ct)
    return alphas, c


def _scaled_backward(P: Tensor, E: Tensor, F_last: Tensor, every: int) -> Tensor:
    """Backward variables [T, K, B], each position up to a constant factor per
    sequence. ``F_last`` [T, K, B] holds the scaled end weights at each
    sequence's last position and 0 elsewhere, so beta_t = E (P_{t+1} beta_{t+1})
    + F_last[t] starts every sequence at its own end in one right-padded batch."""
    T, K, B = P.shape
    betas = torch.empty_like(P)
    b = betas[T - 1]
    b.copy_(F_last[T - 1])
    tmp = P.new_empty(K, B)
    norm = P.new_empty(1, B)
    for hi in range(T - 1, 0, -VIEW_CHUNK):  # t = hi-1 down to lo, views a chunk at a time (see VIEW_CHUNK)
        lo = max(hi - VIEW_CHUNK, 0)
        steps = zip(range(lo, hi), betas[lo:hi].unbind(0), P[lo + 1 : hi + 1].unbind(0), F_last[lo:hi].unbind(0))
        for t, b_t, p_next, f_t in reversed(list(steps)):
            nxt, b = b, b_t
            torch.mul(p_next, nxt, out=tmp)
            torch.addmm(f_t, E, tmp, out=b)
            if t % every == 0:
                torch.sum(b, 0, keepdim=True, out=norm).clamp_(min=TINY)
                b.div_(norm)
    return betas


def _constrained(
    trans: Tensor, start: Tensor, end: Tensor, allowed: Tensor, allowed_start: Tensor, allowed_end: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """Transition, start and end scores with the disallowed entries at -inf."""
    return torch.where(allowed, trans, NEG_INF), torch.where(allowed_start, start, NEG_INF), torch.where(allowed_end, end, NEG_INF)


def _extended(trans: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """The CRF's (constrained) scores as one float64 matrix X [K+1, K+1] over
    the tags and a virtual boundary state K: X[i, j] = transitions, X[K, j] =
    start, X[i, K] = end, X[K, K] = 0. A path y_0..y_{L-1} padded with K on both
    sides then scores sum_t X[y_t, y_{t+1}] plus its emissions, however much
    padding follows it."""
    K = trans.size(0)
    X = torch.zeros(K + 1, K + 1, dtype=torch.float64, device=trans.device)
    X[:K, :K] = trans
    X[K, :K] = start
    X[:K, K] = end
    return X


class _CRFObjective(torch.autograd.Function):
    """log Z [B], or the NLL log Z - score(gold) [B] when gold tags are given,
    with a hand-written backward from forward-backward marginals (no autograd
    graph over the time loop, none over the gold score either).

    One host sync per call, before the time loop: the score ranges that decide
    between the scaled and the log-space recursion, and the validity of the
    gold tags (out of range, or a path the constraints forbid, raise)."""

    @staticmethod
    def forward(ctx, em, trans, start, end, allowed, allowed_start, allowed_end, mask, tags):
        # The work runs in inference mode (cheaper per op); its intermediates are kept on ctx
        # (inference tensors cannot go through save_for_backward) and the results are cloned
        # into ordinary tensors for autograd.
        with torch.inference_mode():
            out = _CRFObjective._forward(ctx, em, trans, start, end, allowed, allowed_start, allowed_end, mask, tags)
        return out.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        with torch.inference_mode():
            grads = _CRFObjective._backward(ctx, grad_out)
        return tuple(None if g is None else g.clone() for g in grads)

    @staticmethod
    def _forward(ctx, em, trans, start, end, allowed, allowed_start, allowed_end, mask, tags):
        B, T, K = em.shape
        f64 = torch.float64
        out_dtype = torch.promote_types(em.dtype, torch.float32)
        maskT = mask.t()  # [T, B]
        lengths = _lengths(mask)
        last = (lengths - 1).clamp_(min=0)
        pad = maskT.logical_not().unsqueeze(1)  # [T, 1, B]
        emT = torch.empty(T, K, B, dtype=f64, device=em.device).copy_(em.permute(1, 2, 0)).masked_fill_(pad, 0.0)
        X = _extended(*_constrained(trans, start, end, allowed, allowed_start, allowed_end))
        Xf = X.view(-1)[:-1]  # the CRF's own scores (without the padding entry)
        p_max = Xf.max()
        m = emT.amax(1, keepdim=True)  # [T, 1, B]
        # the range of the finite emissions (impossible tags are -inf), so one host sync serves every case
        checks = [_finite_range(emT, dim=1).max(), p_max - Xf.nan_to_num(neginf=float("inf")).min()]
        if tags is not None:
            # time-major gold path padded with the boundary state K: [T + 2, B]
            y = torch.where(maskT, tags.t(), 0)
            yc = y.clamp(0, K - 1)
            y_ext = torch.full((T + 2, B), K, dtype=torch.long, device=em.device)
            y_ext[1 : T + 1] = torch.where(maskT, yc, K)
            idx = torch.add(y_ext[1:], y_ext[:-1], alpha=K + 1)  # flat X index of each step [T + 1, B]
            ycT = yc.unsqueeze(1)  # [T, 1, B]
            gold = X.view(-1).take(idx).sum(0) + emT.gather(1, ycT).sum((0, 1))  # [B]; -inf: forbidden path
            checks += [gold.sum(), (yc != y).sum()]
        stats = torch.stack(checks).tolist()  # the one host sync
        if tags is not None and (stats[3] or stats[2] == NEG_INF):
            _raise_for_bad_gold((yc != y).any(0), torch.isinf(gold), K)
        em_range, p_range = stats[0], stats[1]
        every = _scaled_plan(em_range, p_range if math.isfinite(p_range) else 0.0, K)
        ctx.every, ctx.dtypes, ctx.has_gold = every, (em.dtype, trans.dtype), tags is not None
        if every:
            # scaled probability space, float64
            P = emT.sub_(m.clamp_(min=-1e300)).exp_().masked_fill_(pad, 0.0)  # consumes emT
            shift = p_max.clamp_(min=-1e300)
            Xs = torch.exp(X - shift)
            E, S, F = Xs[:K, :K], Xs[K, :K], Xs[:K, K]
            alphas, c = _scaled_forward(P, E, S, every)
            a_last = _at(alphas, last)  # [K, B]
            log_c = torch.log(c).masked_fill_(pad, 0.0)  # c is 1 except at renormalised steps
            log_z = (log_c + m).sum((0, 1)) + torch.log(torch.mv(a_last.t(), F)) + (lengths + 1) * shift
            saved = [P, E, F, alphas, c, pad, last]
        else:
            # exact log-space path, in the compute dtype
            em_c = em.to(out_dtype).masked_fill(~mask.unsqueeze(2), 0.0)
            Xc = X.to(out_dtype)
            alphas, offsets = _forward_alphas(em_c.transpose(0, 1).contiguous(), Xc[:K, :K], Xc[K, :K])
            log_z = _log_z(alphas, offsets, Xc[:K, K], lengths).to(f64)
            saved = [em_c, Xc, mask, alphas, pad, lengths, last]
        log_z = torch.where(lengths > 0, log_z, 0.0)
        if tags is not None:
            saved += [ycT, idx]
            log_z = log_z - gold
        ctx.saved = saved
        return log_z.to(out_dtype)

    @staticmethod
    def _backward(ctx, grad_out):
        em_dtype, p_dtype = ctx.dtypes
        if ctx.saved is None:
            raise RuntimeError("LinearChainCRF: backward through the same NLL / log Z twice is not supported (its buffers are freed after the first)")
        saved, ctx.saved = ctx.saved, None  # freed now: the backward runs once and is not differentiable
        g = grad_out.to(torch.float64)
        if ctx.every:
            P, E, F, alphas, c, pad, last = saved[:7]
            T, K, B = P.shape
            # the scaled end weights at each sequence's last position (empty sequences have
            # alpha = 0, so what they get here does not matter)
            F_last = P.new_zeros(T, K, B).scatter_(0, last.view(1, 1, B).expand(1, K, B), F.view(1, K, 1).expand(1, K, B))
            betas = _scaled_backward(P, E, F_last, ctx.every)
            ab = alphas * betas
            # marginals = alpha * beta / d; scale = incoming gradient / d, 0 on padding
            scale = (g.view(1, 1, B) / ab.sum(1, keepdim=True).clamp_(min=TINY)).masked_fill_(pad, 0.0)  # [T, 1, B]
            g_em = ab.mul_(scale)  # [T, K, B]: d log Z / d em times the gradient
            gX = torch.zeros(K + 1, K + 1, dtype=torch.float64, device=P.device)
            gX[K, :K] = g_em[0].sum(1)
            gX[:K, K] = _at(g_em, last).sum(1)
            if T > 1:
                # xi_t(i, j) = alpha_t(i) E(i, j) P_{t+1}(j) beta_{t+1}(j) / (c_{t+1} d_{t+1})
                u = alphas[:-1] * (scale[1:] / c[1:])
                v = P[1:] * betas[1:]
                gX[:K, :K] = torch.bmm(u, v.transpose(1, 2)).sum(0).mul_(E)
        else:
            em_c, Xc, mask, alphas, pad, lengths, last = saved[:7]
            B, T, K = em_c.shape
            marg, pair = _marginals(em_c, Xc[:K, :K], Xc[:K, K], mask, alphas)
            gc = g.to(marg.dtype)
            g_em = (marg * gc.view(B, 1, 1)).permute(1, 2, 0).to(torch.float64)  # [T, K, B]
            gX = torch.zeros(K + 1, K + 1, dtype=torch.float64, device=em_c.device)
            if pair is not None:
                gX[:K, :K] = torch.einsum("btij,b->ij", pair, gc)
            gX[K, :K] = (marg[:, 0] * gc.unsqueeze(1)).sum(0)
            gX[:K, K] = (marg.gather(1, last.view(B, 1, 1).expand(B, 1, K)).squeeze(1) * gc.unsqueeze(1)).sum(0)
            gX.masked_fill_(torch.isinf(Xc), 0.0)  # no gradient for disallowed (-inf) entries
        if ctx.has_gold:
            ycT, idx = saved[7:]
            # minus the gold path: one-hot emissions (one entry per position, so a plain scatter: no atomics,
            # deterministic on GPU too), and the count of each X entry it uses (index_add_: on CUDA it sums with
            # atomics, so the transitions' gradient may differ between runs in its last bits)
            g_em.scatter_(1, ycT, g_em.gather(1, ycT) - torch.where(pad, 0.0, g.view(1, 1, -1)))
            gX.view(-1).index_add_(0, idx.view(-1), g.neg().expand(idx.shape).reshape(-1))
        K = gX.size(0) - 1
        return (
            g_em.permute(2, 0, 1).to(em_dtype),  # [B, T, K]
            gX[:K, :K].to(p_dtype), gX[K, :K].to(p_dtype), gX[:K, K].to(p_dtype),
            None, None, None, None, None,
        )


def _finite_range(x: Tensor, dim: int) -> Tensor:
    """The range of the finite values of x along ``dim`` (0 where there are none)."""
    finite = torch.isfinite(x)
    hi = torch.where(finite, x, NEG_INF).amax(dim)
    lo = torch.where(finite, x, float("inf")).amin(dim)
    r = hi - lo
    return torch.where(torch.isfinite(r), r, 0.0)


def _log0(x: Tensor) -> Tensor:
    """log of a non-negative tensor, -inf where it is 0. Zeros (impossible
    tags, padding) never reach torch.log, whose -inf path is several times
    slower than a finite one on CPU."""
    pos = x > 0
    return torch.where(pos, x, 1.0).log_().masked_fill_(~pos, NEG_INF)


def _raise_for_bad_gold(out_of_range: Tensor, forbidden: Tensor, num_tags: int) -> None:
    """ValueError naming the sequences whose gold tags are out of range, else
    those whose gold path the constraints forbid ([B] bool each); nothing if none."""
    if bool(out_of_range.any()):
        raise ValueError(f"tags must be in [0, {num_tags}) at unmasked positions (sequences {out_of_range.nonzero().flatten().tolist()})")
    if bool(forbidden.any()):
        raise ValueError(
            f"gold tag path of sequence(s) {forbidden.nonzero().flatten().tolist()} uses a transition, "
            f"first tag or last tag that the CRF's constraints forbid (e.g. O followed by I-X in BIO)"
        )


# --- exact log-space path (extreme score ranges) --------------------------------------------


def _align(x: Tensor, lengths: Tensor, to_end: bool, batch_dim: int = 2) -> Tensor:
    """Shift each sequence of time-major x ([T, K, B], or [T, B, K] with
    batch_dim=1) along time: right-padded -> end-aligned (to_end) or back."""
    T = x.size(0)
    ar = torch.arange(T, device=x.device).unsqueeze(1)
    shift = (T - lengths).unsqueeze(0)
    idx = (shift.neg() + ar) % T if to_end else (shift + ar) % T  # [T, B]
    shape = [T, 1, 1]
    shape[batch_dim] = x.size(batch_dim)
    return x.gather(0, idx.view(shape).expand_as(x))


def _marginals(em, trans, end, mask, alphas):
    """Unary marginals [B, T, K] (0 on padding) and pairwise (None when T < 2)
    marginals [B, T-1, K, K] of (tag i at t, tag j at t+1), 0 on padding.
    Each is normalised per position (softmax), so the per-sequence constants
    of renormalised alphas and betas cancel exactly."""
    B, T, K = em.shape
    lengths = _lengths(mask)
    em_rev = _align(em.transpose(0, 1), lengths, True, batch_dim=1).contiguous()  # [T, B, K], end-aligned
    betas_rev = _backward_betas(em_rev, trans, end)
    betas = _align(betas_rev, lengths, False, batch_dim=1).transpose(0, 1)  # [B, T, K], right-padded
    alphas_b = alphas.transpose(0, 1)  # [B, T, K]
    marg = torch.softmax(alphas_b + betas, dim=2)
    marg = torch.where(mask.unsqueeze(2), marg, torch.zeros_like(marg))
    if T < 2:
        return marg, None
    # xi[b, t, i, j] ~ exp(alpha_t(i) + trans(i, j) + em_{t+1}(j) + beta_{t+1}(j)), normalised over (i, j)
    right = (em[:, 1:] + betas[:, 1:]).unsqueeze(2)  # [B, T-1, 1, K]
    left = alphas_b[:, :-1].unsqueeze(3)  # [B, T-1, K, 1]
    xi = torch.softmax((left + trans.view(1, 1, K, K) + right).view(B, T - 1, K * K), dim=2).view(B, T - 1, K, K)
    xi = torch.where(mask[:, 1:].view(B, T - 1, 1, 1), xi, torch.zeros_like(xi))
    return marg, xi



# The meet-in-the-middle decoder keeps every step's candidate scores (about (T-1) K^2 B floats) for
# one bulk backpointer pass. On CPU it is used while they are at most this many; above it,
# `_viterbi_stepwise` keeps one step's candidates at a time (a max per step, no stored backpointers,
# and recomputes the chosen tag's backpointer while backtracking), which streams less memory: on one CPU
# thread here (x86_64, torch 2.13, 2026-11-30) the two tie at 0.4 million ((128, 40, 9): 0.95 ms) and the
# stepwise one is ahead above ((256, 30, 17), 2.1 M: 2.1 vs 3.7 ms; (1024, 30, 17), 8.6 M: 5.3 vs 40 ms).
# Off CPU meet-in-the-middle is always used. (A variant keeping [T, K, B] backpointers from one
# `max(dim).indices` per step, tried on 2026-11-30, was slower than both above 0.4 M and was reverted.)
VITERBI_BULK_MAX = 1 << 19


def _argmax_code(cand: Tensor, best: Tensor, dim: int, desc: Tensor) -> Tensor:
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
    """Index constants of `_viterbi_meet_in_middle` for one shape (immutable, so cached)."""
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


def _viterbi_meet_in_middle(emT: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor) -> Tuple[Tensor, Tensor]:
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
    em_pos, end_at, desc, base, row0, trail_start, neg_p, zeros = _meet_in_middle_indices(T, K, B, emT.device, emT.dtype)
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
    fwd_at = _at(st[:, :K, :B], at)
    joined = fwd_at + torch.where(last > n - 1, st[T - 1 - n, :K, B:], end.unsqueeze(1))
    best_score, tag = joined.max(dim=0)  # [B]: the best score, and the tag at `at`
    # pointer table over the slots (k, j, col) of st: a forward slot points to the best previous
    # tag, a backward slot to the best next tag, both in row k-1; row 0 points to itself
    ptr = row0.new_empty(n + 1, K, W)
    ptr[0] = row0
    if n:
        code = _argmax_code(cand, st[1:, :K].unsqueeze(2), 2, desc)  # K - argmax
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


def _viterbi_stepwise(emT: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor) -> Tuple[Tensor, Tensor]:
    """Viterbi for large batches on CPU: (best scores [B], tags [T, B]), same
    contract as `_viterbi_meet_in_middle`. The forward pass keeps one small
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
    final = _at(scores, last.clamp(min=0)) + end.unsqueeze(1)
    best_score, best_last = final.max(dim=0)  # [B]
    # tags[t] is the best path's tag at t for t <= last, its last tag above
    reaches = last.unsqueeze(0) >= torch.arange(T, device=emT.device).unsqueeze(1)  # [T, B]
    tags = torch.empty(T, B, dtype=torch.long, device=emT.device)
    tags[T - 1] = best_last
    for b in range(T - 1, 0, -VIEW_CHUNK):  # t = b, b-1, ..., a+1: tags[t] -> tags[t-1]
        a = max(b - VIEW_CHUNK, 0)
        steps = zip(scores[a:b].unbind(0), tags[a + 1 : b + 1].unbind(0), tags[a:b].unbind(0), reaches[a + 1 : b + 1].unbind(0))
        for s_prev, t_next, t_prev, reach in reversed(list(steps)):
            prev = (s_prev + trans.index_select(1, t_next)).max(dim=0).indices
            torch.where(reach, prev, best_last, out=t_prev)
    return best_score, tags


# --- entity marginals ------------------------------------------------------------------------
#
# The probability, under the (constrained) CRF, that a sequence contains exactly
# the entity (start, end, label): BIO: y_s = B-X, y_t = I-X for s < t <= e and
# y_{e+1} != I-X (or e is the last position); BILUO: y_s = U-X when s = e, else
# B-X, I-X..., L-X. From log-space forward (alpha) and backward (beta)
# variables in float64 (no renormalisation needed: float64 keeps 1e-11 absolute
# precision on scores of magnitude 1e5), the log score of a span is
#   alpha_s(B) + [trans(B, I) + em_{s+1}(I)] + sum_{s+1<t<=e'} [trans(I, I) + em_t(I)] + closing(e)
# with prefix sums over time for the middle part, so any set of spans is one
# gather. Impossible steps (-inf) are counted apart so prefix-sum differences
# never see inf - inf: a span through one has probability exactly 0.


class EntityTags(NamedTuple):
    """Tag indices per entity label X [X] (long): B-X and I-X, and for BILUO
    also L-X and U-X (None for BIO)."""

    begin: Tensor
    inside: Tensor
    last: Optional[Tensor] = None
    unit: Optional[Tensor] = None

    @property
    def biluo(self) -> bool:
        return self.last is not None


def _log_forward_backward(em: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor,
                          rows: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Log forward and backward variables [B, T, K] and log Z [B] of
    right-padded float64 emissions (padding 0) with each sequence's last index
    ``last`` [B] (-1: empty). beta at a sequence's last position is the end
    score; past it both hold values nobody reads. With ``rows`` = (sequence
    [N], position [N]) of the real positions, the variables come packed, [N, K]
    in that order (the logs are then taken of the real positions only).

    Runs in scaled probability space (one matrix product per step, like the
    training objective) and takes logs at the end; when the scores spread too
    far for that to be exact (one host sync decides), in log space."""
    B, T, K = em.shape
    if T == 0:
        if rows is not None:
            return em.new_zeros(0, K), em.new_zeros(0, K), em.new_zeros(B)
        return em.clone(), em.clone(), em.new_zeros(B)
    X = _extended(trans, start, end)
    Xf = X.view(-1)[:-1]
    emT = em.permute(1, 2, 0)  # [T, K, B]
    pad = (torch.arange(T, device=em.device).view(T, 1, 1) > last.view(1, 1, B))  # [T, 1, B]
    finite = torch.isfinite(Xf)
    hi = torch.where(finite, Xf, NEG_INF).max()
    lo = torch.where(finite, Xf, float("inf")).min()
    # the finite emissions' max and min per position (one pass for the range and the scaling)
    em_finite = torch.isfinite(emT)
    em_hi = torch.where(em_finite, emT, NEG_INF).amax(1, keepdim=True)  # [T, 1, B]
    em_lo = torch.where(em_finite, emT, float("inf")).amin(1, keepdim=True)
    has_finite = torch.isfinite(em_hi)
    em_spread = torch.where(has_finite, em_hi - em_lo, 0.0).max()
    em_range, p_range = torch.stack([em_spread, hi - lo]).tolist()  # the one host sync
    every = _scaled_plan(em_range, p_range if math.isfinite(p_range) else 0.0, K)
    if not every:
        return _log_forward_backward_logspace(em, trans, start, end, last, rows)
    shift = torch.where(torch.isfinite(hi), hi, 0.0)
    m = torch.where(pad | ~has_finite, 0.0, em_hi)  # [T, 1, B]
    P = (emT - m).exp().masked_fill_(pad, 0.0)
    Xs = torch.exp(X - shift)
    E, S, F = Xs[:K, :K], Xs[K, :K], Xs[:K, K]
    lc = last.clamp(min=0)
    alphas, c, betas, norms = _scaled_forward_backward(P, E, S, F, lc, every)
    # log of the factors taken out: forward up to t, backward from t on
    step = (_log0(c) + m + shift).masked_fill_(pad, 0.0).cumsum(0)  # [T, 1, B]
    after = (m + shift).masked_fill_(pad, 0.0)
    after_rev = after.flip(0).cumsum(0).flip(0)  # sum_{u >= t}
    log_norm = _log0(norms).masked_fill_(pad, 0.0).flip(0).cumsum(0).flip(0)
    beta_step = (after_rev - after).add_(log_norm).add_(shift)  # [T, 1, B]
    ar = torch.arange(B, device=em.device)
    final = _log0(alphas[lc, :, ar]).add_(step[lc, :, ar]) + end  # [B, K]: log alpha at each last position
    log_z = torch.where(last >= 0, torch.logsumexp(final, dim=1), 0.0)
    if rows is not None:
        b_rows, t_rows = rows
        log_alpha = _log0(alphas[t_rows, :, b_rows]).add_(step[t_rows, :, b_rows])  # [N, K]
        log_beta = _log0(betas[t_rows, :, b_rows]).add_(beta_step[t_rows, :, b_rows])
        return log_alpha, log_beta, log_z
    log_alpha = _log0(alphas).add_(step)
    log_beta = _log0(betas).add_(beta_step)
    return log_alpha.permute(2, 0, 1), log_beta.permute(2, 0, 1), log_z


def _scaled_forward_backward(P: Tensor, E: Tensor, S: Tensor, F: Tensor, last: Tensor, every: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """`_scaled_forward` and `_scaled_backward` in one loop, with the backward's norms:
    step i advances the forward pass to position i and the backward pass to
    T-1-i as one batched product of the stacked [2, K, K] matrices (E^T, E)
    and one elementwise product, half the operations of two loops. ``F`` [K]
    the scaled end weights, placed at each sequence's last position ``last`` [B]
    (in range), so every sequence's backward pass starts at its own end.
    Returns (alphas [T, K, B], c [T, 1, B], betas [T, K, B], norms [T, 1, B])."""
    T, K, B = P.shape
    M = torch.stack([E.t(), E])  # [2, K, K]
    Ps = torch.stack([P, P.flip(0)], 1)  # [T, 2, K, B]: forward at i, backward at T-1-i
    # h_i = M state_{i-1} + F_i: the backward's betas (before P); H holds the F terms (the end weights
    # at step T-1-last, the forward's start at step 0) and each step adds its product in place
    H = P.new_zeros(T, 2, K, B)
    H[:, 1].scatter_(0, (T - 1 - last).view(1, 1, B).expand(1, K, B), F.view(1, K, 1).expand(1, K, B))
    H[0, 0] = S.unsqueeze(1)
    St = torch.empty_like(Ps)  # state_i = h_i * P: the forward's alphas
    N = P.new_ones(T, 2, 1, B)
    state = torch.mul(H[0], Ps[0], out=St[0])
    for a in range(1, T, VIEW_CHUNK):
        b = min(a + VIEW_CHUNK, T)
        for i, h, p, s in zip(range(a, b), H[a:b].unbind(0), Ps[a:b].unbind(0), St[a:b].unbind(0)):
            h.baddbmm_(M, state)
            if i % every == 0:
                n = N[i]
                torch.sum(h, 1, keepdim=True, out=n).clamp_(min=TINY)
                h.div_(n)
            state = torch.mul(h, p, out=s)
    alphas, c = St[:, 0], N[:, 0]
    betas, norms = H[:, 1].flip(0), N[:, 1].flip(0)
    return alphas, c, betas, norms


def _log_forward_backward_logspace(em: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor,
                                   rows: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """`_log_forward_backward` in log space (logsumexp per step), for score
    ranges the scaled recursions cannot hold exactly (packed too when ``rows`` is given)."""
    B, T, K = em.shape
    alpha = torch.empty_like(em)
    beta = torch.empty_like(em)
    alpha[:, 0] = start + em[:, 0]
    trans_b = trans.unsqueeze(0)
    for t in range(1, T):
        torch.add(torch.logsumexp(alpha[:, t - 1].unsqueeze(2) + trans_b, dim=1), em[:, t], out=alpha[:, t])
    is_last = last.unsqueeze(1) == torch.arange(T, device=em.device)  # [B, T]
    end_b = end.unsqueeze(0).expand(B, K)
    beta[:, T - 1] = end_b
    for t in range(T - 2, -1, -1):
        nxt = torch.logsumexp(trans_b + (em[:, t + 1] + beta[:, t + 1]).unsqueeze(1), dim=2)
        torch.where(is_last[:, t : t + 1], end_b, nxt, out=beta[:, t])
    final = alpha.gather(1, last.clamp(min=0).view(B, 1, 1).expand(B, 1, K)).squeeze(1) + end
    log_z = torch.where(last >= 0, torch.logsumexp(final, dim=1), 0.0)
    return (alpha, beta, log_z) if rows is None else (alpha[rows], beta[rows], log_z)


class _SpanTerms:
    """Per-position terms, packed [N(+1), X] over the N real positions of a
    right-padded batch (sequence after sequence; padding takes no work), from
    which the log score of any span (b, s, e, x) is a few gathers at packed
    rows off[b] + s (see `scores`)."""

    def __init__(self, em: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor, ents: EntityTags) -> None:
        T = em.size(1)
        dev = em.device
        lengths = last + 1
        self.off = torch.cumsum(lengths, 0) - lengths  # [B]: each sequence's first packed row
        rows = torch.nonzero(torch.arange(T, device=dev).unsqueeze(0) < lengths.unsqueeze(1), as_tuple=True)
        self.pos_b, self.pos_s = rows  # [N] each: the sequence and position of every packed row
        alpha, beta, self.log_z = _log_forward_backward(em, trans, start, end, last, rows)  # [N, K]
        self.last, self.lengths, self.biluo, self.T = last, lengths, ents.biluo, T
        b_, i_ = ents.begin.to(dev), ents.inside.to(dev)  # (tags passed by a caller may be on the host)
        self.X = len(b_)
        em = em[rows]  # [N, K]
        ends_here = (self.pos_s == last[self.pos_b]).unsqueeze(1)  # [N, 1]: a sequence's last position
        # index_select, not advanced indexing: a gather along the last dim several times faster on CPU
        self.begin = alpha.index_select(1, b_)  # [N, X]
        self.beta_begin, self.beta_inside = beta.index_select(1, b_), beta.index_select(1, i_)
        em_inside = em.index_select(1, i_)
        # the first inside step (at s + 1, from B-X), indexed by s; the later ones (from I-X) as prefix sums
        self.first = _next_row(trans[b_, i_] + em_inside, ends_here)
        self.cum, self.cum_inf = _prefix_sums(trans[i_, i_] + em_inside)  # [N + 1, X]
        if not ents.biluo:
            # leaving the entity after tag k at e: the next tag is anything but I-X, or e is the last position
            nb = _next_row(em + beta, ends_here)  # [N, K]
            n_max = nb.amax(1, keepdim=True)
            n_max = torch.where(torch.isfinite(n_max), n_max, 0.0)
            nb_exp = (nb - n_max).exp_()  # shared by both closing terms
            # both closing terms (after B-X, after I-X) in one product: [N, 2X]
            close = self._close(nb_exp, n_max, trans, end, torch.cat([b_, i_]), torch.cat([i_, i_]), ends_here)
            self.close_b, self.close_i = close[:, : self.X], close[:, self.X :]
        else:
            l_, u_ = ents.last.to(dev), ents.unit.to(dev)
            self.unit = alpha.index_select(1, u_) + beta.index_select(1, u_)
            em_beta_l = em.index_select(1, l_) + beta.index_select(1, l_)
            self.close_b = _next_row(trans[b_, l_] + em_beta_l, ends_here)  # L-X right after B-X, indexed by s
            self.close_i = trans[i_, l_] + em_beta_l  # L-X after I-X, at e

    @staticmethod
    def _close(nb_exp: Tensor, n_max: Tensor, trans: Tensor, end: Tensor, frm: Tensor, excl: Tensor, is_last: Tensor) -> Tensor:
        """log sum_{y != excl[x]} exp(trans[frm[x], y] + nb[n, y]) [N, X], or the end
        score at a sequence's last position, from nb_exp = exp(nb - n_max) (n_max
        [N, 1] the finite maxima of nb over y): one matrix product with both
        sides shifted by their maxima (relative precision 1e-16; -inf entries are 0)."""
        rows = trans[frm].clone()  # [X, K]
        rows[torch.arange(len(frm), device=trans.device), excl] = NEG_INF
        r_max = torch.where(torch.isfinite(rows), rows, NEG_INF).amax().clamp(min=-1e300)
        inner = _log0(torch.matmul(nb_exp, (rows - r_max).exp().t())).add_(n_max + r_max)
        return torch.where(is_last, end[frm].view(1, -1), inner)

    def _middle(self, b: Tensor, lo: Tensor, hi: Tensor, x: Tensor) -> Tensor:
        """Sum of the inside steps at positions lo..hi-1 of sequence b (0 when hi <= lo; -inf through an impossible one)."""
        n = self.lengths[b]
        hi = torch.minimum(torch.maximum(hi, lo), n) + self.off[b]
        lo = torch.minimum(lo, n) + self.off[b]
        total = self.cum[hi, x] - self.cum[lo, x]
        return total.masked_fill(self.cum_inf[hi, x] - self.cum_inf[lo, x] > 0, NEG_INF)

    def scores(self, b: Tensor, s: Tensor, e: Tensor, x: Tensor) -> Tensor:
        """Log scores (before - log Z) of the spans (b, s, e, x), e inclusive,
        s <= e <= last[b]; long tensors that broadcast together."""
        length = e - s + 1
        ps, pe = self.off[b] + s, self.off[b] + e
        head = self.begin[ps, x]
        first = self.first[ps, x]
        if not self.biluo:  # B-X at s, I-X at s+1..e, then not I-X
            long = head + first + self._middle(b, s + 2, e + 1, x) + self.close_i[pe, x]
            return torch.where(length == 1, head + self.close_b[ps, x], long)
        # BILUO: U-X; or B-X at s, I-X at s+1..e-1, L-X at e
        long = head + first + self._middle(b, s + 2, e, x) + self.close_i[pe, x]
        longer = torch.where(length == 2, head + self.close_b[ps, x], long)
        return torch.where(length == 1, self.unit[ps, x], longer)

    def prefix_scores_to(self, b: Tensor, s: Tensor, e: Tensor, x: Tensor) -> Tensor:
        """Log scores (before - log Z) of y_s = B-X followed by I-X up to e
        (broadcasting long tensors, s < e <= last[b]): a bound on the
        probability of every entity starting at s and ending after e, in both schemes."""
        ps, pe = self.off[b] + s, self.off[b] + e
        return self.begin[ps, x] + self.first[ps, x] + self._middle(b, s + 2, e + 1, x) + self.beta_inside[pe, x]

    # every start at once (no gathers): [N, X], row n at (pos_b[n], pos_s[n])

    def unit_scores(self) -> Tensor:
        """Log scores (before - log Z) of the one-token entities at every start."""
        return self.unit if self.biluo else self.begin + self.close_b

    def begin_scores(self) -> Tensor:
        """Log scores (before - log Z) of y_s = B-X at every start: a bound on
        the probability of every entity of more than one token starting at s."""
        return self.begin + self.beta_begin


def _next_row(x: Tensor, ends_here: Tensor) -> Tensor:
    """Packed x [N, X] moved one row up (x'[n] = x[n + 1], the next position of
    the same sequence), -inf at each sequence's last position."""
    out = x.new_full(x.shape, NEG_INF)
    out[:-1] = x[1:]
    return out.masked_fill_(ends_here, NEG_INF)


def _prefix_sums(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Prefix sums over the packed rows [N + 1, X] of the finite values of x
    [N, X] and of the count of -inf values (0 at row 0); a difference of two
    rows of one sequence sums the positions between them."""
    inf = torch.isinf(x)
    zero = x.new_zeros(1, x.size(1))
    fin = torch.cat([zero, torch.where(inf, 0.0, x).cumsum(0)], 0)
    cnt = torch.cat([zero, inf.to(x.dtype).cumsum(0)], 0)
    return fin, cnt


class LinearChainCRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags.

    Parameters: ``transitions`` [K, K] (score of moving from tag i to tag j),
    ``start_transitions`` [K], ``end_transitions`` [K]. Optional constraints:
    ``allowed`` [K, K] bool, ``allowed_start`` [K] bool, ``allowed_end`` [K]
    bool (see `transition_constraints` and `from_tags`).
    """

    def __init__(
        self,
        num_tags: int,
        allowed: Optional[Tensor] = None,
        allowed_start: Optional[Tensor] = None,
        allowed_end: Optional[Tensor] = None,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if num_tags <= 0:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-init_scale, init_scale))
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-init_scale, init_scale))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-init_scale, init_scale))
        ones = torch.ones
        self.register_buffer("allowed", (ones(num_tags, num_tags, dtype=torch.bool) if allowed is None else allowed.bool()).clone())
        self.register_buffer("allowed_start", (ones(num_tags, dtype=torch.bool) if allowed_start is None else allowed_start.bool()).clone())
        self.register_buffer("allowed_end", (ones(num_tags, dtype=torch.bool) if allowed_end is None else allowed_end.bool()).clone())
        if self.allowed.shape != (num_tags, num_tags) or self.allowed_start.shape != (num_tags,) or self.allowed_end.shape != (num_tags,):
            raise ValueError("constraint shapes must be [K, K], [K] and [K]")

    @classmethod
    def from_tags(cls, tags: Sequence[str], scheme: str = "BIO", **kwargs) -> "LinearChainCRF":
        """A CRF constrained to the valid sequences of ``scheme`` over ``tags``;
        it knows its entity labels (`labels`), so the entity methods need no tag indices."""
        allowed, start, end = transition_constraints(tags, scheme)
        crf = cls(len(tags), allowed, start, end, **kwargs)
        crf.set_entity_tags(entity_tags(tags, scheme))
        crf.labels = entity_labels(tags)
        return crf

    def set_entity_tags(self, ents: EntityTags) -> None:
        """The tag indices of each entity label (non-persistent buffers: they follow the device)."""
        for name in EntityTags._fields:
            value = getattr(ents, name)
            self.register_buffer(f"_ent_{name}", None if value is None else value.clone(), persistent=False)

    def _entity_tags(self, ents: Optional[EntityTags]) -> EntityTags:
        if ents is not None:
            return ents
        if getattr(self, "_ent_begin", None) is None:
            raise ValueError("this CRF has no entity tags: build it with from_tags or pass entity_tags")
        return EntityTags(*(getattr(self, f"_ent_{n}") for n in EntityTags._fields))

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, constrained={not bool(self.allowed.all() and self.allowed_start.all() and self.allowed_end.all())}"

    # -- helpers --------------------------------------------------------------------------

    def _compute_dtype(self, emissions: Tensor) -> torch.dtype:
        return torch.promote_types(emissions.dtype, torch.float32) if emissions.is_floating_point() else torch.float32

    def _params(self, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
        """Transition scores with disallowed entries at -inf, in ``dtype``."""
        return _constrained(
            self.transitions.to(dtype), self.start_transitions.to(dtype), self.end_transitions.to(dtype),
            self.allowed, self.allowed_start, self.allowed_end,
        )

    def _checked_mask(self, emissions: Tensor, mask: Optional[Tensor]) -> Tensor:
        """``mask``, or all True when None, after checking both shapes."""
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        _check(emissions, mask, self.num_tags)
        return mask

    def _prepare(self, emissions: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        mask = self._checked_mask(emissions, mask)
        em = emissions.to(self._compute_dtype(emissions))
        em = em.masked_fill(~mask.unsqueeze(2), 0.0)
        return em, mask

    # -- API ------------------------------------------------------------------------------

    def log_partition(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """log Z [B] over all (allowed) paths; 0 for empty sequences."""
        return self._objective(emissions, mask, None)

    def _objective(self, emissions: Tensor, mask: Optional[Tensor], tags: Optional[Tensor]) -> Tensor:
        mask = self._checked_mask(emissions, mask)
        B, T, K = emissions.shape
        if tags is not None and tags.shape != (B, T):
            raise ValueError(f"tags must be [B, T] = {(B, T)}, got {tuple(tags.shape)}")
        if T == 0:
            return emissions.new_zeros(B, dtype=self._compute_dtype(emissions))
        return _CRFObjective.apply(
            emissions, self.transitions, self.start_transitions, self.end_transitions,
            self.allowed, self.allowed_start, self.allowed_end, mask, None if tags is None else tags.long(),
        )

    def score(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None, check: bool = True) -> Tensor:
        """Score [B] of the tag paths ``tags`` [B, T] (long; values at padding ignored).
        With ``check`` a tag out of range, or a path through a disallowed
        transition, first or last tag, raises ValueError (one host sync)."""
        em, mask = self._prepare(emissions, mask)
        return self._score(em, tags, mask, self._params(em.dtype), check)

    def _score(self, em: Tensor, tags: Tensor, mask: Tensor, params, check: bool) -> Tensor:
        B, T, K = em.shape
        if tags.shape != (B, T):
            raise ValueError(f"tags must be [B, T] = {(B, T)}, got {tuple(tags.shape)}")
        if T == 0:
            return em.new_zeros(B)
        trans, start, end = params
        tags = tags.long().masked_fill(~mask, 0)
        out_of_range = (tags < 0) | (tags >= K)
        tags = tags.clamp(0, K - 1)
        lengths = _lengths(mask)
        nonempty = lengths > 0
        s = em.gather(2, tags.unsqueeze(2)).squeeze(2).sum(1)  # padding emissions are 0
        s = s + torch.where(nonempty, start[tags[:, 0]], 0.0)
        if T > 1:
            s = s + torch.where(mask[:, 1:], trans[tags[:, :-1], tags[:, 1:]], 0.0).sum(1)
        last_tag = tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        s = s + torch.where(nonempty, end[last_tag], 0.0)
        if check:
            bad_range, bad_path = torch.stack([out_of_range.any(1), torch.isinf(s)]).cpu().unbind(0)  # the one sync
            _raise_for_bad_gold(bad_range, bad_path, K)
        return s

    def nll(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Negative log-likelihood [B] of the gold paths ``tags`` [B, T]: log Z - score.
        A tag out of range, or a gold path through a disallowed transition,
        first or last tag, raises ValueError."""
        return self._objective(emissions, mask, tags)

    def partial_nll(self, emissions: Tensor, allowed_tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """NLL [B] of partially annotated sequences: ``allowed_tags`` [B, T, K] bool
        marks the tags the annotation admits at each position (all K where the
        gold tag is unknown). Equals `nll` when exactly one tag is allowed everywhere."""
        em, mask = self._prepare(emissions, mask)
        if allowed_tags.shape != em.shape:
            raise ValueError(f"allowed_tags must be [B, T, K] = {tuple(em.shape)}, got {tuple(allowed_tags.shape)}")
        clamped = emissions.masked_fill(~allowed_tags.bool(), NEG_INF)
        log_z_gold = self.log_partition(clamped, mask)
        if bool(torch.isinf(log_z_gold).any()):
            bad = torch.nonzero(torch.isinf(log_z_gold)).flatten().tolist()
            raise ValueError(f"the annotation of sequence(s) {bad} admits no path the CRF's constraints allow")
        return self.log_partition(emissions, mask) - log_z_gold

    def marginals(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Posterior probability [B, T, K] of each tag at each position (0 on
        padding): the gradient of log Z w.r.t. the emissions."""
        with torch.enable_grad():
            em = emissions.detach().to(self._compute_dtype(emissions)).requires_grad_(True)
            if em.size(1) == 0:
                return em.detach().new_zeros(em.shape)
            (marg,) = torch.autograd.grad(self.log_partition(em, mask).sum(), em)
        return marg

    def viterbi(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Best path per sequence: (scores [B], paths [B, T] long, -1 past each length).
        Empty sequences score 0. Ties go to the lower tag index.

        See `_viterbi_meet_in_middle` (on GPU, and for small batches on CPU) and
        `_viterbi_stepwise` (large batches on CPU, where storing every step's
        candidate scores costs more memory traffic than it saves). No Python
        loop runs per sequence and no host sync happens."""
        mask = self._checked_mask(emissions, mask)
        with torch.inference_mode():
            scores, paths = self._viterbi(emissions, mask)
        return scores.clone(), paths.clone()  # ordinary tensors again, usable with autograd

    def _viterbi(self, emissions: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        B, T, K = emissions.shape
        dtype = self._compute_dtype(emissions)
        if T == 0:
            return emissions.new_zeros(B, dtype=dtype), torch.full((B, 0), -1, dtype=torch.long, device=emissions.device)
        trans, start, end = self._params(dtype)
        last = torch.add(_lengths(mask), -1)  # [B]; -1 for empty sequences
        emT = emissions.to(dtype).permute(1, 2, 0).contiguous()  # [T, K, B]
        if emT.device.type != "cpu" or (T - 1) * K * K * B <= VITERBI_BULK_MAX:
            best_score, tags = _viterbi_meet_in_middle(emT, trans, start, end, last)
        else:
            best_score, tags = _viterbi_stepwise(emT, trans, start, end, last)
        return torch.where(last > -1, best_score, 0.0), torch.where(mask, tags.t(), -1)

    @torch.no_grad()
    def nbest(self, emissions: Tensor, mask: Optional[Tensor] = None, k: int = 5) -> Tuple[Tensor, Tensor]:
        """The k best paths, best first: (scores [B, k], paths [B, k, T]), paths -1
        past each length. Where fewer than k allowed paths exist the rest score
        -inf and their paths are -1."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        em, mask = self._prepare(emissions, mask)
        B, T, K = em.shape
        if T == 0:
            scores = em.new_full((B, k), NEG_INF)
            scores[:, 0] = 0.0
            return scores, torch.full((B, k, 0), -1, dtype=torch.long, device=em.device)
        trans, start, end = self._params(em.dtype)
        lengths = _lengths(mask)
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
            step = (t <= last).view(B, 1)
            prev = bps[t - 1].gather(1, tag.unsqueeze(2).expand(B, k, k)).gather(2, rank.unsqueeze(2)).squeeze(2)
            tag = torch.where(step, torch.div(prev, k, rounding_mode="floor"), tag)
            rank = torch.where(step, prev % k, rank)
        valid = torch.isfinite(best)
        paths = paths.masked_fill(~valid.unsqueeze(2) | ~mask.unsqueeze(1), -1)
        # an empty sequence has exactly one (empty) path, of score 0
        empty_scores = torch.full_like(best, NEG_INF)
        empty_scores[:, 0] = 0.0
        best = torch.where((lengths == 0).unsqueeze(1), empty_scores, best)
        return best, paths

    # -- entities --------------------------------------------------------------------------

    def span_terms(self, emissions: Tensor, mask: Optional[Tensor] = None, temperature: float = 1.0,
                   ents: Optional[EntityTags] = None) -> "_SpanTerms":
        """The forward-backward quantities the entity methods share (float64,
        on the emissions' device). ``temperature`` divides the emissions and
        the transition, start and end scores (constraints stay -inf)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        em, mask = self._prepare(emissions, mask)
        em = em.detach().to(torch.float64) / temperature
        trans, start, end = (p.detach() / temperature for p in self._params(torch.float64))
        return _SpanTerms(em, trans, start, end, torch.add(_lengths(mask), -1), self._entity_tags(ents))

    @torch.no_grad()
    def entity_probabilities(self, emissions: Tensor, spans: Tensor, mask: Optional[Tensor] = None,
                             temperature: float = 1.0, terms: Optional["_SpanTerms"] = None,
                             ents: Optional[EntityTags] = None) -> Tensor:
        """Exact posterior probability [N] (float64) that each entity ``spans``
        [N, 4] = (sequence, start, end exclusive, label index) is in the tag
        path, under the constrained CRF. Spans out of range raise."""
        terms = terms or self.span_terms(emissions, mask, temperature, ents)
        if spans.numel() == 0:
            return terms.log_z.new_zeros(0)
        b, s, e, x = spans.long().unbind(1)
        e = e - 1
        bad = (s < 0) | (e < s) | (e > terms.last[b]) | (x < 0) | (x >= terms.X)
        if bool(bad.any()):
            raise ValueError(f"spans out of range: {spans[bad][:5].tolist()}")
        return (terms.scores(b, s, e, x) - terms.log_z[b]).exp()

    @torch.no_grad()
    def entity_candidates(self, emissions: Tensor, mask: Optional[Tensor] = None, threshold: float = 0.1,
                          max_length: Optional[int] = None, temperature: float = 1.0,
                          terms: Optional["_SpanTerms"] = None, ents: Optional[EntityTags] = None) -> Tuple[Tensor, Tensor]:
        """Every entity whose posterior probability is at least ``threshold``:
        (spans [N, 4] long = (sequence, start, end exclusive, label index),
        probabilities [N] float64), sorted by sequence, start, end, label.

        Length 1 is one dense computation over all starts, labels and
        sequences; longer entities are extended only from the (sequence,
        start, label) whose first tags can still reach ``threshold`` (the
        probability of an entity's first tags bounds every longer one), one
        batched gather per length, until none can: so no span at or above the
        threshold is missed whatever its length, and the work past length 1
        is proportional to the live candidates. ``max_length`` caps
        the lengths (None: no cap). threshold 0 lists every possible span."""
        terms = terms or self.span_terms(emissions, mask, temperature, ents)
        T, X = terms.T, terms.X
        dev = terms.log_z.device
        cap = T if max_length is None else min(T, max_length)
        if T == 0:
            return torch.zeros(0, 4, dtype=torch.long, device=dev), terms.log_z.new_zeros(0)
        last, log_z = terms.last, terms.log_z
        pos_b, pos_s = terms.pos_b, terms.pos_s  # [N]: every real position (packed rows)
        z_rows = log_z[pos_b].unsqueeze(1)  # [N, 1]
        # length 1: dense over every real start and label
        p1 = (terms.unit_scores() - z_rows).exp_()  # [N, X]
        n1, x1 = torch.nonzero((p1 >= threshold) & (p1 > 0), as_tuple=True)
        found = [torch.stack([pos_b[n1], pos_s[n1], x1], 1)]  # [n, 3] rows (b, s, x)
        found_p = [p1[n1, x1]]
        found_len = [torch.ones(len(n1), dtype=torch.long, device=dev)]
        # longer entities: only from the (b, s, x) whose first tags can still reach the threshold
        bound = (terms.begin_scores() - z_rows).exp_()
        n2, x2 = torch.nonzero((bound >= threshold) & (pos_s + 1 <= last[pos_b]).unsqueeze(1), as_tuple=True)
        alive = torch.stack([pos_b[n2], pos_s[n2], x2], 1)
        # lengths in blocks of CANDIDATE_BLOCK: the live (b, s, x) extended to every length of a block at once
        # ([N, L] gathers), a length reached while every shorter one's bound held; one host sync per block
        # (the next live set), and everything kept is filtered once at the end
        ext, ext_p, ext_len, ext_ok = [], [], [], []
        length0 = 2
        while length0 <= cap and len(alive):
            L = min(CANDIDATE_BLOCK, cap - length0 + 1)
            b, s, x = (v.unsqueeze(1) for v in alive.unbind(1))  # [N, 1]
            lengths = torch.arange(length0, length0 + L, device=dev)  # [L]
            e = s + lengths - 1  # [N, L]
            last_b = last[b]
            e_in = torch.minimum(e, last_b)  # in range for the gathers (entries past the end are not reached)
            z = log_z[b]
            p = (terms.scores(b, s, e_in, x) - z).exp()
            # continues past length l: the probability of its first l tags (a bound on every longer entity)
            # reaches the threshold and the sequence has a next position
            cont = ((terms.prefix_scores_to(b, s, e_in, x) - z).exp() >= threshold) & (e + 1 <= last_b)
            reached = torch.cat([cont.new_ones(len(alive), 1), cont[:, :-1]], 1).cumprod(1).bool() & (e <= last_b)
            ext.append(alive.repeat_interleave(L, 0))
            ext_p.append(p.reshape(-1))
            ext_len.append(lengths.repeat(len(alive)))
            ext_ok.append(reached.reshape(-1))
            length0 += L
            if length0 <= cap:
                alive = alive[reached[:, -1] & cont[:, -1]]
        if ext:
            rows, probs, lengths = torch.cat(ext), torch.cat(ext_p), torch.cat(ext_len)
            keep = torch.nonzero(torch.cat(ext_ok) & (probs >= threshold) & (probs > 0)).squeeze(1)
            found.append(rows.index_select(0, keep))
            found_p.append(probs.index_select(0, keep))
            found_len.append(lengths.index_select(0, keep))
        rows, probs, lengths = torch.cat(found), torch.cat(found_p), torch.cat(found_len)
        bb, sb, xb = rows.unbind(1)
        order = torch.argsort(((bb * T + sb) * (T + 1) + lengths) * X + xb)
        spans = torch.stack([bb, sb, sb + lengths, xb], 1)[order]
        return spans, probs[order]

    @torch.no_grad()
    def path_entities(self, paths: Tensor, ents: Optional[EntityTags] = None) -> Tensor:
        """The entities [N, 4] = (sequence, start, end exclusive, label index)
        of valid tag paths [B, T] (-1 past each length), sorted; decoded on
        the paths' device with no Python loop over sequences or positions."""
        ents = self._entity_tags(ents)
        B, T = paths.shape
        K = self.num_tags
        dev = paths.device
        label_of = torch.full((K + 1,), -1, dtype=torch.long, device=dev)
        label_of[ents.begin] = torch.arange(len(ents.begin), device=dev)
        inside = torch.zeros(K + 1, dtype=torch.bool, device=dev)
        inside[ents.inside] = True
        p = paths.long().masked_fill(paths < 0, K)  # padding -> the extra entry
        pos = torch.arange(T, device=dev).expand(B, T)
        # the first position >= t that does not continue an entity (T if none)
        stop = torch.where(inside[p], T, pos).flip(1).cummin(1).values.flip(1)
        stop_next = torch.cat([stop[:, 1:], stop.new_full((B, 1), T)], 1)
        starts = label_of[p] >= 0
        if ents.biluo:
            unit_label = torch.full((K + 1,), -1, dtype=torch.long, device=dev)
            unit_label[ents.unit] = torch.arange(len(ents.unit), device=dev)
            end = torch.where(starts, stop_next + 1, pos + 1)  # B-X ... I-X then L-X (the first non-I)
            label = torch.where(starts, label_of[p], unit_label[p])
            starts = starts | (unit_label[p] >= 0)
        else:
            end, label = stop_next, label_of[p]
        bb, ss = starts.nonzero(as_tuple=True)
        return torch.stack([bb, ss, end[bb, ss], label[bb, ss]], 1)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The NLL [B] (so ``crf(emissions, tags, mask).sum()`` is a loss)."""
        return self.nll(emissions, tags, mask)
