"""The training objective: log Z, or the NLL of gold paths, with a hand-written backward.

One autograd Function computes log Z and the gold path's score and, in its
backward, the gradient from the forward-backward marginals (forward_backward.py),
so autograd records no graph over the time loop nor over the gold score.
"""

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import forward_backward as fb
from .forward_backward import NEG_INF, TINY


def constrained_scores(
    trans: Tensor, start: Tensor, end: Tensor, allowed: Tensor, allowed_start: Tensor, allowed_end: Tensor
):
    """Transition, start and end scores with the disallowed entries at -inf."""
    return (
        torch.where(allowed, trans, NEG_INF),
        torch.where(allowed_start, start, NEG_INF),
        torch.where(allowed_end, end, NEG_INF),
    )


def raise_for_bad_gold(out_of_range: Tensor, forbidden: Tensor, num_tags: int) -> None:
    """ValueError naming the sequences whose gold tags are out of range, else
    those whose gold path the constraints forbid ([B] bool each); nothing if none."""
    if bool(out_of_range.any()):
        bad = out_of_range.nonzero().flatten().tolist()
        raise ValueError(f"tags must be in [0, {num_tags}) at unmasked positions (sequences {bad})")
    if bool(forbidden.any()):
        raise ValueError(
            f"gold tag path of sequence(s) {forbidden.nonzero().flatten().tolist()} uses a transition, "
            f"first tag or last tag that the CRF's constraints forbid (e.g. O followed by I-X in BIO)"
        )


class CRFObjective(torch.autograd.Function):
    """log Z [B], or the NLL log Z - score(gold) [B] when gold tags are given.

    One host sync per call, before the time loop: the score ranges that decide
    between the scaled and the log-space recursion (`forward_backward.scaled_plan`),
    and the validity of the gold tags (out of range, or a path the constraints
    forbid, raise). Use through `LinearChainCRF.nll` / `log_partition`."""

    @staticmethod
    def forward(ctx, em, trans, start, end, allowed, allowed_start, allowed_end, mask, tags):
        """log Z [B] (tags None) or the NLL [B] of emissions em [B, T, K] under the parameters."""
        # The work runs in inference mode (cheaper per op); its intermediates are kept on ctx
        # (inference tensors cannot go through save_for_backward) and the results are cloned
        # into ordinary tensors for autograd.
        with torch.inference_mode():
            out = _forward(ctx, em, trans, start, end, allowed, allowed_start, allowed_end, mask, tags)
        return out.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        """The gradients of the emissions and the three score parameters (from the marginals)."""
        with torch.inference_mode():
            grads = _backward(ctx, grad_out)
        return tuple(None if g is None else g.clone() for g in grads)


def _forward(ctx, em, trans, start, end, allowed, allowed_start, allowed_end, mask, tags):
    B, T, K = em.shape
    f64 = torch.float64
    out_dtype = torch.promote_types(em.dtype, torch.float32)
    maskT = mask.t()  # [T, B]
    lengths = mask.sum(dim=1)
    last = (lengths - 1).clamp_(min=0)
    pad = maskT.logical_not().unsqueeze(1)  # [T, 1, B]
    emT = torch.empty(T, K, B, dtype=f64, device=em.device).copy_(em.permute(1, 2, 0)).masked_fill_(pad, 0.0)
    X = fb.extended_scores(*constrained_scores(trans, start, end, allowed, allowed_start, allowed_end))
    Xf = X.view(-1)[:-1]  # the CRF's own scores (without the padding entry)
    p_max = Xf.max()
    m = emT.amax(1, keepdim=True)  # [T, 1, B]
    # the range of the finite emissions (impossible tags are -inf), so one host sync serves every case
    checks = [fb.finite_range(emT, dim=1).max(), p_max - Xf.nan_to_num(neginf=float("inf")).min()]
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
        raise_for_bad_gold((yc != y).any(0), torch.isinf(gold), K)
    em_range, p_range = stats[0], stats[1]
    every = fb.scaled_plan(em_range, p_range if math.isfinite(p_range) else 0.0, K)
    ctx.every, ctx.dtypes, ctx.has_gold = every, (em.dtype, trans.dtype), tags is not None
    if every:
        # scaled probability space, float64
        P = emT.sub_(m.clamp_(min=-1e300)).exp_().masked_fill_(pad, 0.0)  # consumes emT
        shift = p_max.clamp_(min=-1e300)
        Xs = torch.exp(X - shift)
        E, S, F = Xs[:K, :K], Xs[K, :K], Xs[:K, K]
        alphas, c = fb.scaled_forward(P, E, S, every)
        a_last = fb.at_positions(alphas, last)  # [K, B]
        log_c = torch.log(c).masked_fill_(pad, 0.0)  # c is 1 except at renormalised steps
        log_z = (log_c + m).sum((0, 1)) + torch.log(torch.mv(a_last.t(), F)) + (lengths + 1) * shift
        saved = [P, E, F, alphas, c, pad, last]
    else:
        # exact log-space recursions, float64
        em64 = emT.permute(2, 0, 1)  # [B, T, K], padding 0
        alpha, beta, log_z = fb.log_space_forward_backward(em64, X[:K, :K], X[K, :K], X[:K, K], lengths - 1)
        saved = [em64, X, mask, alpha, beta, pad, last]
    log_z = torch.where(lengths > 0, log_z, 0.0)
    if tags is not None:
        saved += [ycT, idx]
        log_z = log_z - gold
    ctx.saved = saved
    return log_z.to(out_dtype)


def _backward(ctx, grad_out):
    em_dtype, p_dtype = ctx.dtypes
    if ctx.saved is None:
        raise RuntimeError(
            "LinearChainCRF: backward through the same NLL / log Z twice is not supported "
            "(its buffers are freed after the first)"
        )
    saved, ctx.saved = ctx.saved, None  # freed now: the backward runs once and is not differentiable
    g = grad_out.to(torch.float64)
    if ctx.every:
        P, E, F, alphas, c, pad, last = saved[:7]
        T, K, B = P.shape
        # (empty sequences have alpha = 0, so the end weights they get here do not matter)
        betas, _ = fb.scaled_backward(P, E, fb.end_weights_at(F, last, T), ctx.every)
        ab = alphas * betas
        # marginals = alpha * beta / d; scale = incoming gradient / d, 0 on padding
        scale = (g.view(1, 1, B) / ab.sum(1, keepdim=True).clamp_(min=TINY)).masked_fill_(pad, 0.0)  # [T, 1, B]
        g_em = ab.mul_(scale)  # [T, K, B]: d log Z / d em times the gradient
        gX = torch.zeros(K + 1, K + 1, dtype=torch.float64, device=P.device)
        gX[K, :K] = g_em[0].sum(1)
        gX[:K, K] = fb.at_positions(g_em, last).sum(1)
        if T > 1:
            # xi_t(i, j) = alpha_t(i) E(i, j) P_{t+1}(j) beta_{t+1}(j) / (c_{t+1} d_{t+1})
            u = alphas[:-1] * (scale[1:] / c[1:])
            v = P[1:] * betas[1:]
            gX[:K, :K] = torch.bmm(u, v.transpose(1, 2)).sum(0).mul_(E)
    else:
        em64, X, mask, alpha, beta, pad, last = saved[:7]
        B, T, K = em64.shape
        marg, pair = fb.log_space_marginals(em64, X[:K, :K], mask, alpha, beta)
        g_em = (marg * g.view(B, 1, 1)).permute(1, 2, 0).contiguous()  # [T, K, B]
        gX = torch.zeros(K + 1, K + 1, dtype=torch.float64, device=em64.device)
        if pair is not None:
            gX[:K, :K] = torch.einsum("btij,b->ij", pair, g)
        gX[K, :K] = (marg[:, 0] * g.unsqueeze(1)).sum(0)
        gX[:K, K] = (marg.gather(1, last.view(B, 1, 1).expand(B, 1, K)).squeeze(1) * g.unsqueeze(1)).sum(0)
        gX.masked_fill_(torch.isinf(X), 0.0)  # no gradient for disallowed (-inf) entries
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
        gX[:K, :K].to(p_dtype),
        gX[K, :K].to(p_dtype),
        gX[:K, K].to(p_dtype),
        None,
        None,
        None,
        None,
        None,
    )
