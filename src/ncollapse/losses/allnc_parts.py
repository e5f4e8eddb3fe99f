"""AllNC's building blocks: the class-mean memory, class prototypes, HyCon and P2P.

The paper (Zhang et al., 2024) describes these parts but its exact formulas and hyper-parameters
were not available to us: everything here is **our design** within that description. The
choices, and which of them are interpretation, are written out in ``docs/allnc.md``.

Each part is a separate module or function and can be used (or switched off) on its own;
:class:`AllNCObjective` combines them for the training engine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ClassMeanMemory",
    "HyConLoss",
    "P2PLoss",
    "batch_class_means",
    "class_prototypes",
]


def _normalise(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


# ------------------------------------------------------------------------------ class means


def batch_class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Differentiable in-batch class means.

    Returns ``(means, present)``: ``means`` (K, d) with row k the mean of the batch features of
    class k (zero for a class absent from the batch), and ``present`` (K,) bool.
    """
    onehot = F.one_hot(labels, num_classes).to(features.dtype)  # (B, K)
    counts = onehot.sum(dim=0)
    means = onehot.T @ features / counts.clamp_min(1.0)[:, None]
    return means, counts > 0


class ClassMeanMemory(nn.Module):
    """An exponential moving average, per class, of features (L2-normalised first by default).

    ``update(features, labels)`` (under ``no_grad``) normalises each feature (``normalize=True``;
    with ``False`` the raw features are averaged), takes the batch mean ``b_k`` of each class
    present, and sets ``mean_k <- momentum * mean_k + (1 - momentum) * b_k``; the first time a
    class is seen its mean is set to ``b_k`` directly (no bias towards zero). Classes never seen
    keep a zero row and ``seen[k] = False``. The stored means are *not* re-normalised (the norm
    of a mean of unit vectors, at most 1, measures how tight the class is); users normalise
    them where they need directions. Both buffers are persistent (saved in checkpoints).
    """

    mean: Tensor
    seen: Tensor

    def __init__(
        self, num_classes: int, dim: int, momentum: float = 0.9, normalize: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"class-mean momentum must be in [0, 1), got {momentum}")
        self.num_classes = num_classes
        self.dim = dim
        self.momentum = float(momentum)
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Fold a batch into the memory (no gradient)."""
        z = features.detach().to(self.mean.dtype)
        if self.normalize:
            z = _normalise(z)
        bm, present = batch_class_means(z, labels, self.num_classes)
        old = present & self.seen
        new = present & ~self.seen
        m = self.momentum
        updated = torch.where(old[:, None], m * self.mean + (1.0 - m) * bm, self.mean)
        self.mean.copy_(torch.where(new[:, None], bm, updated))  # masks, no host sync
        self.seen |= present

    def means(self) -> Tensor:
        """The stored means (K, d) (zero rows for classes never seen; see ``seen``)."""
        return self.mean

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum:g}, "
            f"normalize={self.normalize}"
        )


def _prototype_parts(
    features: Tensor,
    labels: Tensor,
    memory_means: Tensor,
    memory_seen: Tensor | None,
    batch_weight: float,
    centre: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(unnormalised prototypes (K, d), valid (K,), origin (d,) or None)``; see
    :func:`class_prototypes`. ``origin`` is the class-balanced centre when ``centre``."""
    num_classes = memory_means.shape[0]
    z = features if centre else _normalise(features)
    bm, present = batch_class_means(z, labels, num_classes)
    mem = memory_means.detach().to(z.dtype)
    if memory_seen is None:
        memory_seen = mem.norm(dim=1) > 0
    memory_seen = memory_seen.to(z.device)
    both = (present & memory_seen)[:, None]
    only_b = (present & ~memory_seen)[:, None]
    mixed = torch.where(both, (1.0 - batch_weight) * mem + batch_weight * bm, mem)
    mixed = torch.where(only_b, bm, mixed)
    valid = present | memory_seen
    vmask = valid[:, None].to(z.dtype)
    origin = None
    if centre:
        # every valid class once, as the collapse metrics centre (docs/metrics.md)
        origin = (mixed * vmask).sum(0) / vmask.sum().clamp_min(1.0)
        mixed = mixed - origin
    return mixed * vmask, valid, origin


def class_prototypes(
    features: Tensor,
    labels: Tensor,
    memory_means: Tensor,
    memory_seen: Tensor | None = None,
    batch_weight: float = 0.5,
    centre: bool = False,
) -> tuple[Tensor, Tensor]:
    """Unit class prototypes mixing the memory with the in-batch means.

    With ``b_k`` the in-batch class means and ``m_k`` the (detached) memory means:
    ``p_k = (1 - batch_weight) m_k + batch_weight b_k`` for a class in both, ``b_k`` for a class
    only in the batch, ``m_k`` for a class only in the memory; the gradient flows through
    ``b_k``. ``centre=False``: ``b_k`` are means of the L2-normalised features (the memory holds
    the same) and the prototype is ``normalise(p_k)``. ``centre=True``: ``b_k`` are means of the
    raw features (the memory holds raw means, ``ClassMeanMemory(normalize=False)``) and the
    prototype is ``normalise(p_k - p_bar)``, with ``p_bar`` the mean of the valid ``p_k``, each
    class once: the centred class-mean directions that NC2, NC3 and the minority-collapse index
    measure. Returns ``(prototypes (K, d), valid (K,) bool)``; rows of classes in neither are
    zero and not valid. ``memory_seen`` defaults to the rows of ``memory_means`` with a
    non-zero norm.
    """
    mixed, valid, _ = _prototype_parts(
        features, labels, memory_means, memory_seen, batch_weight, centre
    )
    return _normalise(mixed), valid


# ------------------------------------------------------------------------------ HyCon


class HyConLoss(nn.Module):
    """Hybrid contrastive loss (our design of the paper's HyCon).

    InfoNCE on L2-normalised features ``z`` with temperature ``tau``. For an anchor ``z_i`` of
    class ``y``, the candidates are the class prototypes ``c_k`` (:func:`class_prototypes`: the
    memory mean mixed with the in-batch mean, so the gradient flows through the in-batch means)
    and the other samples of the batch. Positives ``P_i``: ``c_y`` and the same-class samples;
    negatives: every other valid prototype and other-class sample. The denominator is
    *class-averaged* (as in balanced contrastive learning, Zhu et al. 2022): the candidates of
    each class k contribute the mean, not the sum, of their ``exp(s/tau)``, so a head class with
    many samples in the batch does not dominate it::

        loss_i = -(1/|P_i|) sum_{p in P_i} s_ip / tau + log sum_k (1/|A_ik|) sum_{a in A_ik} exp(s_ia / tau)

    (``A_ik``: the candidates of class k for anchor i, itself excluded; ``loss_i >= 0``.) The
    loss is averaged over the anchors of each class first, then over the classes present, so
    each class counts once whatever its size.

    ``centre=True`` contrasts directions about the class-balanced centre ``p_bar`` of the
    prototypes (:func:`class_prototypes` with ``centre=True``; pass a memory of raw means):
    ``z_i = normalise(h_i - p_bar)``. Without it, features after a ReLU are non-negative, so
    the best the loss can do is orthogonal classes, whose centred means are an ETF only when
    all class means have the same norm; about the centre it pushes the centred directions, the
    ones the collapse metrics measure, apart directly.
    """

    def __init__(
        self, temperature: float = 0.1, batch_weight: float = 0.5, centre: bool = False
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"HyCon temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.batch_weight = float(batch_weight)
        self.centre = bool(centre)

    def forward(
        self,
        features: Tensor,
        labels: Tensor,
        memory_means: Tensor,
        memory_seen: Tensor | None = None,
    ) -> Tensor:
        """``features`` (B, d), ``labels`` (B,), ``memory_means`` (K, d) -> scalar."""
        num_classes = memory_means.shape[0]
        mixed, valid, origin = _prototype_parts(
            features, labels, memory_means, memory_seen, self.batch_weight, self.centre
        )
        protos = _normalise(mixed)
        z = _normalise(features if origin is None else features - origin)
        b = z.shape[0]
        cand = torch.cat([z, protos], dim=0)  # (B + K, d)
        cand_cls = torch.cat([labels, torch.arange(num_classes, device=labels.device)])
        s = z @ cand.T / self.temperature  # (B, B + K)
        mask = torch.ones_like(s, dtype=torch.bool)
        mask[:, :b] &= ~torch.eye(b, dtype=torch.bool, device=s.device)
        mask[:, b:] &= valid[None, :]
        onehot = F.one_hot(cand_cls, num_classes).to(s.dtype)  # (B + K, K)
        per_class = mask.to(s.dtype) @ onehot  # (B, K): |A_ik|
        size = per_class.gather(1, cand_cls[None, :].expand(b, -1))  # |A_i,class(a)|
        neg_inf = torch.finfo(s.dtype).min
        log_denom = torch.logsumexp(
            torch.where(mask, s - size.clamp_min(1.0).log(), torch.full_like(s, neg_inf)), dim=1
        )
        pos = mask & (cand_cls[None, :] == labels[:, None])
        mean_pos = (s * pos.to(s.dtype)).sum(1) / pos.sum(1).clamp_min(1).to(s.dtype)
        per_anchor = log_denom - mean_pos
        cls_loss, present = batch_class_means(per_anchor[:, None], labels, num_classes)
        pres = present.to(s.dtype)
        return (cls_loss[:, 0] * pres).sum() / pres.sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature:g}, batch_weight={self.batch_weight:g}, "
            f"centre={self.centre}"
        )


# ------------------------------------------------------------------------------ P2P


class P2PLoss(nn.Module):
    """Peer-to-peer alignment of class means with classifier vectors (our design of the
    paper's P2P).

    With ``C_kj = cos(mu_k, w_j) / tau`` and ``P`` the classes present (``present_mask``)::

        L_mw = -(1/|P|) sum_{k in P} log softmax_{j in 1..K}(C_k,:)[k]
        L_wm = -(1/|P|) sum_{k in P} log softmax_{j in P}(C_:,k)[k]     (the transposed direction)

    ``symmetric=True`` returns ``(L_mw + L_wm) / 2`` (an average, so the scale of the loss does
    not depend on the switch), else ``L_mw``. Each class counts once, whatever its size.
    """

    def __init__(self, temperature: float = 0.5, symmetric: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"P2P temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)

    def forward(
        self, class_means: Tensor, classifier_weight: Tensor, present_mask: Tensor | None = None
    ) -> Tensor:
        """``class_means`` (K, d), ``classifier_weight`` (K, d), ``present_mask`` (K,) bool
        (default: all classes) -> scalar (0 with a graph when no class is present)."""
        num_classes = class_means.shape[0]
        if classifier_weight.shape != class_means.shape:
            raise ValueError(
                f"class_means {tuple(class_means.shape)} and classifier_weight "
                f"{tuple(classifier_weight.shape)} must have the same (K, d) shape"
            )
        if present_mask is None:
            present_mask = torch.ones(num_classes, dtype=torch.bool, device=class_means.device)
        w = classifier_weight.to(class_means.dtype)
        c = _normalise(class_means) @ _normalise(w).T / self.temperature  # (K, K): C_kj
        pres = present_mask.to(device=c.device, dtype=c.dtype)
        n_present = pres.sum().clamp_min(1.0)
        # masks instead of indexing: no host sync, and 0 (with a graph) when nothing is present
        loss = -(torch.diagonal(F.log_softmax(c, dim=1)) * pres).sum() / n_present
        if self.symmetric:
            neg_inf = torch.finfo(c.dtype).min
            cols = torch.where(present_mask.to(c.device)[:, None], c, torch.full_like(c, neg_inf))
            l_wm = -(torch.diagonal(F.log_softmax(cols, dim=0)) * pres).sum() / n_present
            loss = 0.5 * (loss + l_wm)
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, symmetric={self.symmetric}"
