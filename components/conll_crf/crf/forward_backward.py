"""The forward-backward algorithm of the linear-chain CRF: one implementation for
the training loss, the tag marginals and the entity probabilities.

Shapes: B batch, T time (padded length), K tags.

Two ways to run the recursions, chosen per call by `scaled_plan`:

* **scaled probability space** (the default): with P_t = exp(e_t - max_j e_t)
  and E = exp(transitions - max), the forward recursion is one matrix product
  and one elementwise product per step, renormalised every few steps:
  ``alpha_t = (E^T alpha_{t-1}) * P_t / c_t``. Layout: time-major, batch-last
  ``[T, K, B]``, so a step is one ``[K, K] @ [K, B]`` product. Padding has
  P = 0, so the variables past a sequence's end are 0 and no per-sequence
  alignment is needed. Computed in float64: the renormalised values cannot
  underflow while the spread of scores inside one step stays below ~600 nats.
* **log space** (logsumexp per step, float64): exact for any score range, and
  several times slower; used when the scores spread too far for the above.

`scaled_forward` and `scaled_backward` are the recursions; the training
objective (objective.py) keeps their scaled variables, and `log_forward_backward`
turns the same variables into log-space alphas, betas and log Z for the entity
probabilities (entities.py).
"""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

NEG_INF = float("-inf")
MAX_SCALED_SPREAD = 600.0
FLOAT64_LOG_RANGE = 650.0
MAX_RENORM_INTERVAL = 16
TINY = 1e-300
# The loops over time take their per-step views from unbind (several times cheaper than indexing
# per step) a chunk of steps at a time: holding a whole sequence's T views alive through a loop lets
# Python's cyclic GC move thousands of them per batch towards its old generation, whose full
# collections cost ~0.1 s each in a process that has loaded spaCy and torch.
VIEW_CHUNK = 64


def scaled_plan(em_range: float, p_range: float, num_tags: int) -> int:
    """How often the scaled recursions must renormalise (every n steps), or 0
    when the scores spread too far for float64 scaled arithmetic to be exact.

    em_range (float): the largest range of finite emissions within one position.
    p_range (float): the range of the finite transition, start and end scores.
    num_tags (int): K.
    RETURNS (int): n >= 1, or 0 for the log-space recursions.

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


def extended_scores(trans: Tensor, start: Tensor, end: Tensor) -> Tensor:
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


def finite_range(x: Tensor, dim: int) -> Tensor:
    """The range of the finite values of x along ``dim`` (0 where there are none)."""
    finite = torch.isfinite(x)
    hi = torch.where(finite, x, NEG_INF).amax(dim)
    lo = torch.where(finite, x, float("inf")).amin(dim)
    r = hi - lo
    return torch.where(torch.isfinite(r), r, 0.0)


def log0(x: Tensor) -> Tensor:
    """log of a non-negative tensor, -inf where it is 0. Zeros (impossible
    tags, padding) never reach torch.log, whose -inf path is several times
    slower than a finite one on CPU."""
    pos = x > 0
    return torch.where(pos, x, 1.0).log_().masked_fill_(~pos, NEG_INF)


def at_positions(x: Tensor, pos: Tensor) -> Tensor:
    """x [T, K, B] at each sequence's position ``pos`` [B] (in range): [K, B]."""
    T, K, B = x.shape
    return x.gather(0, pos.view(1, 1, B).expand(1, K, B)).squeeze(0)


def end_weights_at(F: Tensor, last: Tensor, T: int) -> Tensor:
    """[T, K, B]: the scaled end weights ``F`` [K] at each sequence's last
    position ``last`` [B] (in range) and 0 elsewhere: the input of `scaled_backward`."""
    K, B = F.size(0), last.numel()
    out = F.new_zeros(T, K, B)
    return out.scatter_(0, last.view(1, 1, B).expand(1, K, B), F.view(1, K, 1).expand(1, K, B))


def scaled_forward(P: Tensor, E: Tensor, S: Tensor, every: int) -> Tuple[Tensor, Tensor]:
    """The forward recursion in scaled probability space.

    P (Tensor): [T, K, B] scaled emissions, 0 on padding.
    E (Tensor): [K, K] scaled transitions.
    S (Tensor): [K] scaled start weights.
    every (int): renormalise every this many steps (see `scaled_plan`).
    RETURNS (Tuple[Tensor, Tensor]): alphas [T, K, B] and c [T, 1, B]: the true
        forward value at t is alphas[t] times the product of c up to t (c is 1
        except at the renormalised steps; a tiny positive number where
        everything is 0)."""
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


def scaled_backward(P: Tensor, E: Tensor, F_last: Tensor, every: int) -> Tuple[Tensor, Tensor]:
    """The backward recursion in scaled probability space.

    P (Tensor): [T, K, B] scaled emissions, 0 on padding.
    E (Tensor): [K, K] scaled transitions.
    F_last (Tensor): [T, K, B], the scaled end weights at each sequence's last
        position and 0 elsewhere (`end_weights_at`), so that
        beta_t = E (P_{t+1} beta_{t+1}) + F_last[t] starts every sequence at
        its own end in one right-padded batch.
    every (int): renormalise every this many steps.
    RETURNS (Tuple[Tensor, Tensor]): betas [T, K, B] and norms [T, 1, B]: the
        true backward value at t is betas[t] times the product of the norms
        from t on (norms are 1 except at the renormalised steps)."""
    T, K, B = P.shape
    betas = torch.empty_like(P)
    norms = P.new_ones(T, 1, B)
    b = betas[T - 1]
    b.copy_(F_last[T - 1])
    tmp = P.new_empty(K, B)
    for hi in range(T - 1, 0, -VIEW_CHUNK):  # t = hi-1 down to lo, views a chunk at a time (see VIEW_CHUNK)
        lo = max(hi - VIEW_CHUNK, 0)
        steps = zip(range(lo, hi), betas[lo:hi].unbind(0), P[lo + 1 : hi + 1].unbind(0), F_last[lo:hi].unbind(0))
        for t, b_t, p_next, f_t in reversed(list(steps)):
            nxt, b = b, b_t
            torch.mul(p_next, nxt, out=tmp)
            torch.addmm(f_t, E, tmp, out=b)
            if t % every == 0:
                norm = norms[t]
                torch.sum(b, 0, keepdim=True, out=norm).clamp_(min=TINY)
                b.div_(norm)
    return betas, norms


def log_forward_backward(
    em: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor, rows: Optional[Tuple[Tensor, Tensor]] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """Log forward and backward variables and log Z, exact.

    em (Tensor): [B, T, K] float64 emissions, right-padded (padding 0).
    trans, start, end (Tensor): [K, K], [K], [K] constrained scores (-inf: disallowed).
    last (Tensor): [B] each sequence's last index (-1: empty).
    rows (Optional[Tuple[Tensor, Tensor]]): (sequence [N], position [N]) of the
        real positions; the variables then come packed, [N, K] in that order
        (and the logs are taken of the real positions only).
    RETURNS (Tuple[Tensor, Tensor, Tensor]): log alpha and log beta [B, T, K]
        (or [N, K]) and log Z [B] (0 for empty sequences). beta at a sequence's
        last position is the end score; past it both hold values nobody reads.

    Runs `scaled_forward` and `scaled_backward` and takes logs at the end;
    when the scores spread too far for that to be exact (one host sync
    decides), the log-space recursions."""
    B, T, K = em.shape
    if T == 0:
        if rows is not None:
            return em.new_zeros(0, K), em.new_zeros(0, K), em.new_zeros(B)
        return em.clone(), em.clone(), em.new_zeros(B)
    X = extended_scores(trans, start, end)
    Xf = X.view(-1)[:-1]
    emT = em.permute(1, 2, 0)  # [T, K, B]
    pad = torch.arange(T, device=em.device).view(T, 1, 1) > last.view(1, 1, B)  # [T, 1, B]
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
    every = scaled_plan(em_range, p_range if math.isfinite(p_range) else 0.0, K)
    if not every:
        return log_space_forward_backward(em, trans, start, end, last, rows)
    shift = torch.where(torch.isfinite(hi), hi, 0.0)
    m = torch.where(pad | ~has_finite, 0.0, em_hi)  # [T, 1, B]
    P = (emT - m).exp().masked_fill_(pad, 0.0)
    Xs = torch.exp(X - shift)
    E, S, F = Xs[:K, :K], Xs[K, :K], Xs[:K, K]
    lc = last.clamp(min=0)
    alphas, c = scaled_forward(P, E, S, every)
    betas, norms = scaled_backward(P, E, end_weights_at(F, lc, T), every)
    # log of the factors taken out: forward up to t, backward from t on
    step = (log0(c) + m + shift).masked_fill_(pad, 0.0).cumsum(0)  # [T, 1, B]
    after = (m + shift).masked_fill_(pad, 0.0)
    after_rev = after.flip(0).cumsum(0).flip(0)  # sum_{u >= t}
    log_norm = log0(norms).masked_fill_(pad, 0.0).flip(0).cumsum(0).flip(0)
    beta_step = (after_rev - after).add_(log_norm).add_(shift)  # [T, 1, B]
    ar = torch.arange(B, device=em.device)
    final = log0(alphas[lc, :, ar]).add_(step[lc, :, ar]) + end  # [B, K]: log alpha at each last position
    log_z = torch.where(last >= 0, torch.logsumexp(final, dim=1), 0.0)
    if rows is not None:
        b_rows, t_rows = rows
        log_alpha = log0(alphas[t_rows, :, b_rows]).add_(step[t_rows, :, b_rows])  # [N, K]
        log_beta = log0(betas[t_rows, :, b_rows]).add_(beta_step[t_rows, :, b_rows])
        return log_alpha, log_beta, log_z
    log_alpha = log0(alphas).add_(step)
    log_beta = log0(betas).add_(beta_step)
    return log_alpha.permute(2, 0, 1), log_beta.permute(2, 0, 1), log_z


def log_space_forward_backward(
    em: Tensor, trans: Tensor, start: Tensor, end: Tensor, last: Tensor, rows: Optional[Tuple[Tensor, Tensor]] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """`log_forward_backward` by logsumexp recursions, for score ranges the
    scaled recursions cannot hold exactly; same arguments and results."""
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


def log_space_marginals(
    em: Tensor, trans: Tensor, mask: Tensor, alpha: Tensor, beta: Tensor
) -> Tuple[Tensor, Optional[Tensor]]:
    """Tag marginals from log-space variables (`log_space_forward_backward`).

    em (Tensor): [B, T, K] emissions (padding 0); trans (Tensor): [K, K];
    mask (Tensor): [B, T] bool; alpha, beta (Tensor): [B, T, K].
    RETURNS (Tuple[Tensor, Optional[Tensor]]): unary marginals [B, T, K] (0 on
        padding) and pairwise marginals [B, T-1, K, K] of (tag i at t, tag j at
        t+1) (0 on padding; None when T < 2). Each is normalised per position,
        so no per-sequence constant matters."""
    B, T, K = em.shape
    marg = torch.softmax(alpha + beta, dim=2)
    marg = torch.where(mask.unsqueeze(2), marg, torch.zeros_like(marg))
    if T < 2:
        return marg, None
    # xi[b, t, i, j] ~ exp(alpha_t(i) + trans(i, j) + em_{t+1}(j) + beta_{t+1}(j)), normalised over (i, j)
    right = (em[:, 1:] + beta[:, 1:]).unsqueeze(2)  # [B, T-1, 1, K]
    left = alpha[:, :-1].unsqueeze(3)  # [B, T-1, K, 1]
    xi = torch.softmax((left + trans.reshape(1, 1, K, K) + right).reshape(B, T - 1, K * K), dim=2).view(B, T - 1, K, K)
    xi = torch.where(mask[:, 1:].view(B, T - 1, 1, 1), xi, torch.zeros_like(xi))
    return marg, xi
