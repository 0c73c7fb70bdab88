"""Training objectives: the rebalanced multinomial cross-entropy of Zhang et al.
and the ab regression baseline (L2 as in Iizuka et al. / Cheng et al., or smooth-L1).

Both take the network output at its own resolution and the ground-truth ab at the
input resolution, which is average-pooled down to the output's size first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from colorizer.bins import nearest_bin, soft_encode

__all__ = ["downsample_ab", "classification_loss", "channel_classification_loss", "regression_loss", "cast_loss",
           "masked_mean"]


def downsample_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average ``(B, 2, H, W)`` ab to ``size`` (the network output's (h, w))."""
    if tuple(ab.shape[-2:]) == tuple(size):
        return ab
    return F.adaptive_avg_pool2d(ab, size)


def classification_loss(
    logits: torch.Tensor,
    ab: torch.Tensor,
    centres: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    k: int = 5,
    sigma: float = 5.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rebalanced multinomial cross-entropy (Zhang et al., eq. 2).

    L = -mean_{h,w} v(Z_hw) sum_q Z_hwq log softmax(logits)_hwq, where Z is the soft
    encoding of the truth over its k nearest bins and v the rebalancing weight of
    the truth's nearest bin (1 everywhere when ``class_weights`` is None).

    Args:
        logits: ``(B, Q, h, w)``; ab: ``(B, 2, H, W)`` ground truth; centres ``(Q, 2)``;
        class_weights: ``(Q,)`` from ``rebalance_weights``; mask: ``(B,)`` bool, images
            to count (say, skip grayscale ones); None counts all.
    Returns:
        the scalar loss.
    """
    target = downsample_ab(ab.float(), logits.shape[-2:])
    with torch.no_grad():
        idx, weights = soft_encode(target, centres, k=k, sigma=sigma)  # (B, k, h, w) each
    logp = F.log_softmax(logits.float(), dim=1)  # (B, Q, h, w)
    ce = -(weights * logp.gather(1, idx)).sum(1)  # (B, h, w)
    if class_weights is not None:
        ce = ce * class_weights.to(ce)[idx[:, 0]]
    return masked_mean(ce, mask)


def channel_classification_loss(
    logits: torch.Tensor,
    ab: torch.Tensor,
    ab_range: float,
    class_weights: torch.Tensor | None = None,
    centres: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of a's class plus b's (the hypercolumn study's per-channel classes).

    ``logits`` ``(B, 2n, h, w)``: a's n classes, then b's, each an equal cut of
    ``[-ab_range, ab_range]``. With ``class_weights`` and ``centres`` each pixel's two terms are
    weighted by the rebalancing weight of the ab bin nearest its true colour, as in
    ``classification_loss``: the rarity of the colour, a and b together, not of each channel alone.
    """
    n = logits.shape[1] // 2
    target = downsample_ab(ab.float(), logits.shape[-2:])
    classes = ((target + ab_range) * (n / (2 * ab_range))).floor().long().clamp_(0, n - 1)
    logits = logits.float()
    per_pixel = (F.cross_entropy(logits[:, :n], classes[:, 0], reduction="none")
                 + F.cross_entropy(logits[:, n:], classes[:, 1], reduction="none"))  # (B, h, w)
    if class_weights is not None:
        if centres is None:
            raise ValueError("channel_classification_loss: class_weights need centres")
        per_pixel = per_pixel * class_weights.to(per_pixel)[nearest_bin(target, centres)]
    return masked_mean(per_pixel, mask)


def regression_loss(
    pred_ab: torch.Tensor,
    ab: torch.Tensor,
    kind: str = "l2",
    class_weights: torch.Tensor | None = None,
    centres: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pixel ab regression loss, in ab units squared (l2) or smooth-L1 (beta 1).

    Args:
        pred_ab: ``(B, 2, h, w)``; ab: ``(B, 2, H, W)`` ground truth; kind: "l2" or
        "smooth_l1"; class_weights with centres: optional rebalancing as above.
    """
    target = downsample_ab(ab.float(), pred_ab.shape[-2:])
    if kind == "l2":
        per_pixel = ((pred_ab.float() - target) ** 2).sum(1)  # (B, h, w)
    elif kind == "smooth_l1":
        per_pixel = F.smooth_l1_loss(pred_ab.float(), target, reduction="none", beta=1.0).sum(1)
    else:
        raise ValueError(f"regression_loss: kind must be 'l2' or 'smooth_l1', got {kind!r}")
    if class_weights is not None:
        if centres is None:
            raise ValueError("regression_loss: class_weights need centres")
        per_pixel = per_pixel * class_weights.to(per_pixel)[nearest_bin(target, centres)]
    return masked_mean(per_pixel, mask)


def cast_loss(pred_ab: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The colour cast of a prediction, squared: per image, the squared ab distance between the mean of
    the decoded ``(B, 2, h, w)`` ``pred_ab`` and the mean of the true ``(B, 2, H, W)`` ``ab``, averaged
    over the images ``mask`` keeps (ab units squared; the evaluation's colour cast is its square root).

    The per-pixel losses score each pixel alone; this scores the whole crop's tint, the error a viewer
    sees first (a yellow or green wash), whatever the pixels do around their mean.
    """
    diff = pred_ab.float().mean(dim=(2, 3)) - ab.float().mean(dim=(2, 3))  # (B, 2)
    return masked_mean((diff ** 2).sum(1).view(-1, 1, 1), mask)


def masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``(B, h, w)`` per-pixel losses over the images ``mask`` ``(B,)`` keeps (all when None)."""
    if mask is None:
        return per_pixel.mean()
    mask = mask.to(per_pixel.device)
    if not mask.any():
        return per_pixel.sum() * 0.0  # keeps the graph, contributes nothing
    return per_pixel[mask].mean()
