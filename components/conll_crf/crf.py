"""A linear-chain conditional random field in PyTorch: exact, batched, constrained.

Shapes: B batch, T time (padded length), K tags. Emissions are ``[B, T, K]``,
masks ``[B, T]`` bool and right-padded (True for a sequence's positions, then
False). A sequence of length 0 is allowed: its log partition is 0 and its path
is empty.

Constraints (from->to transitions, allowed first tags, allowed last tags) are
buffers, not parameters: a disallowed transition is -inf in every computation,
so it is excluded from the partition function, the marginals and every decode,
and no amount of training can make it possible.

Numerics: the forward and backward recursions run in log space (logsumexp), in
float32 at least (float64 stays float64; fp16/bf16 emissions are upcast), so
emissions of magnitude 1e3 and sequences of 10,000 steps are exact to float32
precision. The gradient of the log partition is computed by a hand-written
forward-backward pass (marginals), which avoids autograd's per-step graph.
Everything stays on the emissions' device; no host synchronisation happens
inside the time loops.
"""
from typing import List, Optional, Sequence, Tuple

import math

import torch
from torch import Tensor, nn

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


# --- fast path: scaled probability space -------------------------------------------------
#
# With P_t = exp(e_t - max_j e_t) and E = exp(transitions - max), the forward
# recursion is a matrix product per step, renormalised to sum 1:
#   alpha_t = (E^T alpha_{t-1}) * P_t / c_t,   log Z = sum_t log c_t + shifts.
# Layout: time-major, batch-last [T, K, B], so each step is one [K, K] @ [K, B]
# product and reductions run over contiguous memory. Computed in float64: the
# renormalised values cannot underflow while the spread of scores inside one
# step stays below ~600 nats, which `_scaled_is_exact` checks once per call
# (one host sync per batch, outside the loops); otherwise the log-space path runs.

MAX_SCALED_SPREAD = 600.0
FLOAT64_LOG_RANGE = 650.0
MAX_RENORM_INTERVAL = 16


def _finite_range(x: Tensor, dim=None) -> Tensor:
    finite = torch.isfinite(x)
    hi = torch.where(finite, x, torch.full_like(x, NEG_INF))
    lo = torch.where(finite, x, torch.full_like(x, float("inf")))
    r = (hi.max() - lo.min()) if dim is None else (hi.amax(dim) - lo.amin(dim))
    return torch.where(torch.isfinite(r), r, torch.zeros_like(r))


def _scaled_plan(em: Tensor, trans: Tensor, start: Tensor, end: Tensor) -> int:
    """How often the scaled recursions must renormalise (every n steps), or 0
    when the scores spread too far for float64 scaled arithmetic to be exact.

    Per step, the scaled emissions and transitions are <= 1 and the largest
    entry loses at most spread + log K nats, where spread = range of finite
    emissions within a position + range of finite transitions; inside one step
    no entry that matters lies more than 2 * spread below the largest. So n
    steps without renormalising stay within float64's range when
    n * (spread + log K) + 2 * spread + (start and end ranges) < 650.
    One host sync per call; none inside the loops."""
    K = em.size(2)
    em = em.detach()
    em_range = (em.amax(2) - em.amin(2)).max()
    params = torch.cat([trans.detach().flatten(), start.detach(), end.detach()])
    finite = torch.isfinite(params)
    p_range = params.max() - torch.where(finite, params, float("inf")).min()
    em_range, p_range = torch.stack([em_range.float(), p_range.float()]).tolist()  # the one sync
    if not math.isfinite(em_range):  # impossible tags (-inf): range over the finite emissions
        em_range = float(_finite_range(em, dim=2).max())
    if not math.isfinite(p_range):
        p_range = 0.0
    # start and end weights are counted with the transitions (a conservative bound)
    spread, ends = em_range + p_range, 2 * p_range
    if 2 * spread + ends >= MAX_SCALED_SPREAD:
        return 0
    per_step = spread + math.log(K) + 1.0
    return int(max(1, min(MAX_RENORM_INTERVAL, (FLOAT64_LOG_RANGE - 2 * spread - ends) // per_step)))


def _exp_shifted(x: Tensor, dim=None) -> Tuple[Tensor, Tensor]:
    """(exp(x - max), max) with the max over `dim` (all if None); -inf rows give max 0."""
    m = (x.amax(dim, keepdim=True) if dim is not None else x.max()).clamp(min=-1e300)
    return torch.exp(x - m), m


def _scaled_forward(P: Tensor, E: Tensor, S: Tensor, every: int) -> Tuple[Tensor, Tensor]:
    """P [T, K, B] scaled emissions, E [K, K] scaled transitions, S [K] scaled
    start. Returns (alphas [T, K, B], log_c [T, B]): the true forward value at
    t is alphas[t] * exp(sum of log_c up to t). Renormalised every `every` steps."""
    T, K, B = P.shape
    alphas = torch.empty_like(P)
    c = torch.ones(T, 1, B, dtype=P.dtype, device=P.device)
    a_list, p_list, c_list = alphas.unbind(0), P.unbind(0), c.unbind(0)
    torch.mul(p_list[0], S.unsqueeze(1), out=a_list[0])
    Et = E.t()
    for t in range(1, T):
        a = a_list[t]
        torch.mm(Et, a_list[t - 1], out=a)
        a.mul_(p_list[t])
        if t % every == 0:
            torch.sum(a, 0, keepdim=True, out=c_list[t])
            a.div_(c_list[t])
    return alphas, torch.log(c.squeeze(1))


def _scaled_backward(P_rev: Tensor, E: Tensor, F: Tensor, every: int) -> Tensor:
    """End-aligned backward variables [T, K, B], each position up to a
    constant factor per sequence, from end-aligned scaled emissions P_rev
    [T, K, B] and scaled end weights F [K]."""
    T, K, B = P_rev.shape
    betas = torch.empty_like(P_rev)
    b_list, p_list = betas.unbind(0), P_rev.unbind(0)
    b_list[T - 1].copy_(F.unsqueeze(1).expand(K, B))
    tmp = P_rev.new_empty(K, B)
    norm = P_rev.new_empty(1, B)
    for t in range(T - 2, -1, -1):
        torch.mul(p_list[t + 1], b_list[t + 1], out=tmp)
        b = b_list[t]
        torch.mm(E, tmp, out=b)
        if t % every == 0:
            torch.sum(b, 0, keepdim=True, out=norm)
            b.div_(norm)
    return betas


def _align(x: Tensor, lengths: Tensor, to_end: bool, batch_dim: int = 2) -> Tensor:
    """Shift each sequence of time-major x ([T, K, B], or [T, B, K] with
    batch_dim=1) along time: right-padded -> end-aligned (to_end) or back."""
    T = x.size(0)
    ar = torch.arange(T, device=x.device).unsqueeze(1)
    shift = (T - lengths).unsqueeze(0)
    idx = (shift.neg() + ar) % T if to_end else (shift + ar) % T  # [T, B] (the [1, B] operand first: faster broadcast on CPU)
    shape = [T, 1, 1]
    shape[batch_dim] = x.size(batch_dim)
    return x.gather(0, idx.view(shape).expand_as(x))


class _ScaledLogPartition(torch.autograd.Function):
    """log Z [B] in scaled probability space, with the gradient computed from
    forward-backward marginals (no autograd graph over the time loop)."""

    @staticmethod
    def forward(ctx, em, trans, start, end, mask, every):
        B, T, K = em.shape
        lengths = _lengths(mask)
        last = (lengths - 1).clamp(min=0)
        dtype = em.dtype
        work = torch.float64
        emT = em.to(work).permute(1, 2, 0)  # [T, K, B]
        P, m = _exp_shifted(emT, dim=1)  # m [T, 1, B]
        E, tmax = _exp_shifted(trans.to(work))
        S, smax = _exp_shifted(start.to(work))
        F, fmax = _exp_shifted(end.to(work))
        P = P.contiguous()
        alphas, log_c = _scaled_forward(P, E, S, every)
        valid = mask.t().to(work)  # [T, B]
        a_last = alphas.gather(0, last.view(1, 1, B).expand(1, K, B)).squeeze(0)  # [K, B]
        log_z = (
            ((log_c + m.squeeze(1)) * valid).sum(0)  # padding: emissions 0 so m = 0, c = 1
            + torch.log((a_last * F.unsqueeze(1)).sum(0))
            + last.to(work) * tmax
            + smax
            + fmax
        )
        log_z = torch.where(lengths > 0, log_z, 0.0)
        ctx.save_for_backward(P, E, F, alphas, log_c, valid, lengths)
        ctx.dtypes = (dtype, trans.dtype)
        ctx.every = every
        return log_z.to(dtype)

    @staticmethod
    def backward(ctx, grad_log_z):
        P, E, F, alphas, log_c, valid, lengths = ctx.saved_tensors
        dtype, pdtype = ctx.dtypes
        T, K, B = P.shape
        last = (lengths - 1).clamp(min=0)
        betas = _align(_scaled_backward(_align(P, lengths, True).contiguous(), E, F, ctx.every), lengths, False)
        ab = alphas * betas
        # marginals = alpha * beta / d; scale = incoming gradient / d, 0 on padding
        scale = (valid * grad_log_z.to(P.dtype)).unsqueeze(1) / ab.sum(1, keepdim=True)  # [T, 1, B]
        g_marg = ab.mul_(scale)  # [T, K, B]: d log Z / d em times the gradient
        g_em = g_marg.permute(2, 0, 1)
        g_start = g_marg[0].sum(1)
        g_end = g_marg.gather(0, last.view(1, 1, B).expand(1, K, B)).squeeze(0).sum(1)
        if T > 1:
            # xi_t(i, j) = alpha_t(i) E(i, j) P_{t+1}(j) beta_{t+1}(j) / (c_{t+1} d_{t+1})
            u = (alphas[:-1] * (scale[1:] / torch.exp(log_c[1:]).unsqueeze(1))).permute(1, 0, 2).reshape(K, -1)
            v = (P[1:] * betas[1:]).permute(1, 0, 2).reshape(K, -1)
            g_trans = E * (u @ v.t())
        else:
            g_trans = torch.zeros_like(E)
        return g_em.to(dtype), g_trans.to(pdtype), g_start.to(pdtype), g_end.to(pdtype), None, None


# --- exact log-space path (extreme score ranges) --------------------------------------------


class _LogPartition(torch.autograd.Function):
    """log Z with a hand-written backward from forward-backward marginals."""

    @staticmethod
    def forward(ctx, em, trans, start, end, mask):  # em [B, T, K] (padding zeroed), computed dtype
        B, T, K = em.shape
        lengths = _lengths(mask)
        alphas, offsets = _forward_alphas(em.transpose(0, 1).contiguous(), trans, start)  # [T, B, K]
        log_z = _log_z(alphas, offsets, end, lengths)
        ctx.save_for_backward(em, trans, start, end, mask, alphas)
        return log_z

    @staticmethod
    def backward(ctx, grad_log_z):
        em, trans, start, end, mask, alphas = ctx.saved_tensors
        marg, pair = _marginals(em, trans, end, mask, alphas)
        g = grad_log_z.to(marg.dtype)
        g_em = marg * g.view(-1, 1, 1)
        g_trans = torch.einsum("btij,b->ij", pair, g) if pair is not None else torch.zeros_like(trans)
        g_start = (marg[:, 0] * g.unsqueeze(1)).sum(0) if em.size(1) else torch.zeros_like(start)
        lengths = _lengths(mask)
        B, T, K = em.shape
        last = (lengths - 1).clamp(min=0)
        m_last = marg.gather(1, last.view(B, 1, 1).expand(B, 1, K)).squeeze(1)
        g_end = (m_last * g.unsqueeze(1)).sum(0)
        # No gradient for masked (disallowed) entries: they are -inf constants.
        g_trans = torch.where(torch.isfinite(trans), g_trans, torch.zeros_like(g_trans))
        g_start = torch.where(torch.isfinite(start), g_start, torch.zeros_like(g_start))
        g_end = torch.where(torch.isfinite(end), g_end, torch.zeros_like(g_end))
        return g_em, g_trans, g_start, g_end, None


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
        """A CRF constrained to the valid sequences of ``scheme`` over ``tags``."""
        allowed, start, end = transition_constraints(tags, scheme)
        return cls(len(tags), allowed, start, end, **kwargs)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, constrained={not bool(self.allowed.all() and self.allowed_start.all() and self.allowed_end.all())}"

    # -- helpers --------------------------------------------------------------------------

    def _compute_dtype(self, emissions: Tensor) -> torch.dtype:
        return torch.promote_types(emissions.dtype, torch.float32) if emissions.is_floating_point() else torch.float32

    def _params(self, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
        """Transition scores with disallowed entries at -inf, in ``dtype``."""
        trans = torch.where(self.allowed, self.transitions.to(dtype), NEG_INF)
        start = torch.where(self.allowed_start, self.start_transitions.to(dtype), NEG_INF)
        end = torch.where(self.allowed_end, self.end_transitions.to(dtype), NEG_INF)
        return trans, start, end

    def _prepare(self, emissions: Tensor, mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        _check(emissions, mask, self.num_tags)
        em = emissions.to(self._compute_dtype(emissions))
        em = em.masked_fill(~mask.unsqueeze(2), 0.0)
        return em, mask

    # -- API ------------------------------------------------------------------------------

    def log_partition(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """log Z [B] over all (allowed) paths; 0 for empty sequences."""
        em, mask = self._prepare(emissions, mask)
        return self._log_partition(em, mask, self._params(em.dtype))

    def _log_partition(self, em: Tensor, mask: Tensor, params: Tuple[Tensor, Tensor, Tensor]) -> Tensor:
        if em.size(1) == 0:
            return em.new_zeros(em.size(0))
        trans, start, end = params
        every = _scaled_plan(em, trans, start, end)
        if every:
            return _ScaledLogPartition.apply(em, trans, start, end, mask, every)
        return _LogPartition.apply(em, trans, start, end, mask)

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
            if bool(bad_range.any()):
                raise ValueError(f"tags must be in [0, {K}) at unmasked positions (sequences {bad_range.nonzero().flatten().tolist()})")
            if bool(bad_path.any()):
                raise ValueError(
                    f"gold tag path of sequence(s) {bad_path.nonzero().flatten().tolist()} uses a transition, "
                    f"first tag or last tag that the CRF's constraints forbid (e.g. O followed by I-X in BIO)"
                )
        return s

    def nll(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Negative log-likelihood [B] of the gold paths: log Z - score."""
        em, mask = self._prepare(emissions, mask)
        params = self._params(em.dtype)
        return self._log_partition(em, mask, params) - self._score(em, tags, mask, params, True)

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

    @torch.no_grad()
    def viterbi(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Best path per sequence: (scores [B], paths [B, T] long, -1 past each length).
        Empty sequences score 0.

        The forward pass keeps only max-scores (layout [T, K, B], a contiguous
        max over the previous tag); backpointers are recomputed during
        backtracking for the chosen tag only, as one [K, B] argmax per step."""
        em, mask = self._prepare(emissions, mask)
        B, T, K = em.shape
        if T == 0:
            return em.new_zeros(B), torch.full((B, 0), -1, dtype=torch.long, device=em.device)
        trans, start, end = self._params(em.dtype)
        lengths = _lengths(mask)
        last = (lengths - 1).clamp(min=0)
        emT = em.permute(1, 2, 0).contiguous()  # [T, K, B]
        scores = torch.empty_like(emT)
        torch.add(emT[0], start.unsqueeze(1), out=scores[0])
        s_out = scores.unbind(0)  # [K, B] each
        s_in = scores.unsqueeze(1).unbind(0)  # [1, K(prev), B] each
        e_list = emT.unbind(0)
        trans_jib = trans.t().unsqueeze(2)  # [K(next), K(prev), 1]
        buf = emT.new_empty(K, K, B)
        out = torch.empty(T, B, dtype=torch.long, device=em.device)
        o_list = out.unbind(0)
        # a contiguous max over the previous tag; backpointers are recomputed for
        # the chosen tag only while backtracking (cheaper than max-with-indices).
        for t in range(1, T):
            torch.add(s_in[t - 1], trans_jib, out=buf)
            torch.amax(buf, dim=1, out=s_out[t])
            s_out[t].add_(e_list[t])
        best_score, best_last = self._viterbi_final(scores, end, last)
        # position t-1 takes argmax_i(score_{t-1}(i) + trans(i, tag_t)) while
        # t <= last; above a sequence's last position it carries its best last tag.
        reaches = (last.unsqueeze(0) >= torch.arange(T, device=em.device).unsqueeze(1)).unbind(0)
        o_list[T - 1].copy_(best_last)
        for t in range(T - 1, 0, -1):
            prev = (s_out[t - 1] + trans.index_select(1, o_list[t])).max(dim=0).indices
            torch.where(reaches[t], prev, best_last, out=o_list[t - 1])
        paths = out.t().masked_fill(~mask, -1)
        best_score = torch.where(lengths > 0, best_score, torch.zeros_like(best_score))
        return best_score, paths

    @staticmethod
    def _viterbi_final(scores: Tensor, end: Tensor, last: Tensor) -> Tuple[Tensor, Tensor]:
        """Best final score and last tag [B] from max-scores [T, K, B]."""
        T, K, B = scores.shape
        final = scores.gather(0, last.view(1, 1, B).expand(1, K, B)).squeeze(0) + end.unsqueeze(1)
        return final.max(dim=0)

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

    def forward(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The NLL [B] (so ``crf(emissions, tags, mask).sum()`` is a loss)."""
        return self.nll(emissions, tags, mask)
