"""AllNC parts (SPEC section 8): class-mean memory, HyCon, P2P, the GBBN schedule and sampler.

The paper (Zhang et al., 2024) describes these parts but its exact formulas and hyper-parameters
were not available to us: everything here is **our design** within that description. The
choices, and which of them are interpretation, are written out in ``docs/allnc.md``.

Each part is a separate module or function and can be used (or switched off) on its own;
:class:`AllNCObjective` combines them for the training engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AllNCCriterion",
    "AllNCObjective",
    "ClassMeanMemory",
    "HyConLoss",
    "P2PLoss",
    "batch_class_means",
    "build_allnc_criterion",
    "class_prototypes",
    "gbbn_alpha",
    "reversed_class_probabilities",
    "reversed_sampling_weights",
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
        # every valid class once, as the collapse metrics centre (SPEC section 6)
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


# ------------------------------------------------------------------------------ GBBN


def gbbn_alpha(epoch: float, epochs: int) -> float:
    """BBN's cumulative schedule ``alpha = 1 - (epoch/epochs)^2``, clamped to [0, 1].

    ``epoch`` is the 0-based index of the epoch being trained (BBN's ``epoch - 1``; a fraction
    for per-iteration schedules): 1 at the start, decreasing to ``1 - ((E-1)/E)^2`` in the last
    epoch and 0 at ``epoch = epochs``.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    a = 1.0 - (float(epoch) / float(epochs)) ** 2
    return min(1.0, max(0.0, a))


def reversed_class_probabilities(class_counts: Sequence[int] | Tensor) -> Tensor:
    """Class probabilities of the class-reversed sampler: ``P(j) = (1/n_j) / sum_l (1/n_l)``
    (BBN's reversed sampler, ``w_j = n_max / n_j`` normalised). float64 (K,)."""
    c = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if c.numel() < 1 or bool((c <= 0).any()):
        raise ValueError(f"class_counts must be positive, got {class_counts!r}")
    inv = 1.0 / c
    return inv / inv.sum()


def reversed_sampling_weights(
    class_counts: Sequence[int] | Tensor, labels: Tensor | None = None
) -> Tensor:
    """Per-sample probabilities of the class-reversed sampler.

    A sample of class j is drawn with probability ``P(j) / n_j`` with ``P`` from
    :func:`reversed_class_probabilities`, so a class is drawn with probability ``∝ 1/n_j`` and
    the probabilities of all N training samples sum to 1. Without ``labels`` returns the
    per-class value (K,) (a sample's weight is ``w[label]``); with ``labels`` (N,) returns the
    per-sample vector (N,), ready for ``torch.utils.data.WeightedRandomSampler`` or
    ``torch.multinomial``.
    """
    c = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    per_class = reversed_class_probabilities(c) / c
    if labels is None:
        return per_class
    return per_class[labels.long().cpu()]


# ------------------------------------------------------------------------------ objective


class AllNCObjective(nn.Module):
    """The AllNC training objective (our formulation; ``docs/allnc.md``).

    With ``alpha = gbbn_alpha(epoch, epochs)`` when ``gbbn`` is on (else ``alpha = 1``)::

        loss = alpha * (CE(instance logits) + hycon_weight * HyCon)
             + (1 - alpha) * CE(reversed logits)                    (only when gbbn is on)
             + p2p_weight * P2P

    The representation-learning side (instance-sampled CE and HyCon) is weighted by ``alpha``,
    the re-balancing side (CE on the class-reversed batch) by ``1 - alpha``: BBN's cumulative
    shift from one to the other. As in BBN, the reversed batch trains the whole network;
    ``gbbn_detach=True`` (an ablation) makes it train only the classifier, the caller computing
    those logits from *detached* features (:meth:`reversed_logits`). P2P couples means and
    classifier and keeps a constant weight. ``centre`` runs HyCon and P2P on directions about
    the class-balanced centre of the class means (:func:`class_prototypes`). Switching a part
    off removes its term (and its computation). The class-mean memory is updated after the loss
    is computed, in training mode only.

    Mixup: the CE terms follow the project's rule ``lam L(y_a) + (1 - lam) L(y_b)``; HyCon, P2P
    and the memory use the dominant label (``y_a`` if ``lam >= 0.5`` else ``y_b``). AllNC is
    meant to run without mixup; this only keeps mixed batches from failing.

    After each call, ``last_terms`` holds each term as a detached scalar tensor (no host sync;
    call ``float()`` when logging) and ``alpha`` as a float.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        hycon: bool = True,
        hycon_weight: float = 1.0,
        hycon_temperature: float = 0.1,
        p2p: bool = True,
        p2p_weight: float = 1.0,
        p2p_temperature: float = 0.5,
        p2p_symmetric: bool = True,
        gbbn: bool = True,
        mean_momentum: float = 0.9,
        batch_weight: float = 0.5,
        centre: bool = True,
        gbbn_detach: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.centre = bool(centre)
        self.gbbn_detach = bool(gbbn_detach)
        self.hycon_on = bool(hycon)
        self.p2p_on = bool(p2p)
        self.gbbn = bool(gbbn)
        self.hycon_weight = float(hycon_weight)
        self.p2p_weight = float(p2p_weight)
        self.batch_weight = float(batch_weight)
        self.memory = ClassMeanMemory(
            num_classes, dim, momentum=mean_momentum, normalize=not self.centre
        )
        self.hycon = HyConLoss(hycon_temperature, batch_weight=batch_weight, centre=self.centre)
        self.p2p = P2PLoss(p2p_temperature, symmetric=p2p_symmetric)
        self.last_terms: dict[str, Tensor | float] = {}

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, dim: int) -> AllNCObjective:
        """Build from an ``AllNCConfig``-like object (attributes ``hycon``, ``hycon_weight``,
        ``hycon_temperature``, ``p2p``, ``p2p_weight``, ``p2p_temperature``, ``p2p_symmetric``,
        ``gbbn``, ``mean_momentum``, ``batch_weight``, ``centre``, ``gbbn_detach``; missing ones
        take the defaults)."""
        names = (
            "hycon",
            "hycon_weight",
            "hycon_temperature",
            "p2p",
            "p2p_weight",
            "p2p_temperature",
            "p2p_symmetric",
            "gbbn",
            "mean_momentum",
            "batch_weight",
            "centre",
            "gbbn_detach",
        )
        kw = {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}
        return cls(num_classes, dim, **kw)

    @staticmethod
    def reversed_logits(head: nn.Module, features: Tensor) -> Tensor:
        """Logits of the reversed branch for the classifier side: ``head(features.detach())``,
        so that this term trains only the classifier (pass the backbone's pooled features)."""
        return head(features.detach()).logits

    def alpha(self, epoch: float, epochs: int) -> float:
        """The feature-side weight: :func:`gbbn_alpha` when GBBN is on, else 1."""
        return gbbn_alpha(epoch, epochs) if self.gbbn else 1.0

    def forward(
        self,
        features: Tensor,
        logits: Tensor,
        labels: Tensor,
        classifier_weight: Tensor,
        epoch: float = 0,
        epochs: int = 1,
        rev_logits: Tensor | None = None,
        rev_labels: Tensor | None = None,
        target_b: Tensor | None = None,
        lam: float = 1.0,
    ) -> Tensor:
        """Instance branch ``features`` (B, d) and ``logits`` (B, K) (a head's ``HeadOutput``),
        ``labels`` (B,), ``classifier_weight`` (K, d); with GBBN on, also the reversed branch's
        ``rev_logits`` and ``rev_labels``. Returns the scalar loss."""
        alpha = self.alpha(epoch, epochs)
        terms: dict[str, Tensor | float] = {"alpha": alpha}
        if target_b is None:
            ce = F.cross_entropy(logits, labels)
            y_feat = labels
        else:
            ce = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(
                logits, target_b
            )
            y_feat = labels if lam >= 0.5 else target_b
        terms["ce"] = ce.detach()
        feature_side = ce
        if self.hycon_on and self.hycon_weight != 0:
            hc = self.hycon(features, y_feat, self.memory.mean, self.memory.seen)
            terms["hycon"] = hc.detach()
            feature_side = feature_side + self.hycon_weight * hc
        loss = alpha * feature_side
        if self.gbbn:
            if rev_logits is None or rev_labels is None:
                raise ValueError(
                    "AllNC with gbbn on needs the reversed branch: pass rev_logits and rev_labels "
                    "(a batch from the class-reversed sampler), or switch gbbn off"
                )
            ce_rev = F.cross_entropy(rev_logits, rev_labels)
            terms["ce_rev"] = ce_rev.detach()
            loss = loss + (1.0 - alpha) * ce_rev
        if self.p2p_on and self.p2p_weight != 0:
            protos, valid = class_prototypes(
                features, y_feat, self.memory.mean, self.memory.seen, self.batch_weight, self.centre
            )
            pp = self.p2p(protos, classifier_weight, valid)
            terms["p2p"] = pp.detach()
            loss = loss + self.p2p_weight * pp
        if self.training:
            self.memory.update(features, y_feat)
        terms["loss"] = loss.detach()
        self.last_terms = terms
        return loss

    def extra_repr(self) -> str:
        return (
            f"hycon={self.hycon_on} (w={self.hycon_weight:g}), p2p={self.p2p_on} "
            f"(w={self.p2p_weight:g}), gbbn={self.gbbn} (detach={self.gbbn_detach}), "
            f"centre={self.centre}"
        )


# ------------------------------------------------------------------------------ engine binding


class AllNCCriterion:
    """The engine-facing AllNC criterion (the ``Criterion`` protocol of ``build.py``).

    ``criterion(out, y_a, y_b, lam, rev=None, network=None)``: ``out`` is the instance branch's
    ``HeadOutput``; with GBBN on, ``rev = (out_rev, y_rev)`` is the class-reversed batch's
    output (its logits train the whole network, as in BBN) and ``network`` the model. With
    ``gbbn_detach`` on, ``network.head`` recomputes the reversed logits from the detached
    features, so that term trains only the classifier; this needs a head whose ``features`` it
    can be re-applied to, a :class:`~ncollapse.heads.LinearHead` or
    :class:`~ncollapse.heads.CosineHead`; for other heads the given ``out_rev.logits`` are used
    as they are.
    ``needs_reversed_batch`` tells the engine to draw that batch (sampler:
    :func:`reversed_sampling_weights`). ``set_epoch`` (0-based) drives the GBBN schedule over
    ``epochs``. ``state_dict``/``load_state_dict`` carry the class-mean memory for resuming.
    """

    uses = "features+logits"

    def __init__(self, objective: AllNCObjective, network: nn.Module, epochs: int) -> None:
        self.loss = objective
        self.network = network
        self.epochs = int(epochs)
        self.epoch = 0
        self.needs_reversed_batch = objective.gbbn

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine at the start of every (0-based) epoch."""
        self.epoch = int(epoch)

    @staticmethod
    def sampling_weights(class_counts: Sequence[int], labels: Tensor) -> Tensor:
        """Per-sample weights of the class-reversed sampler the engine draws the second batch with."""
        return reversed_sampling_weights(class_counts, labels)

    def to(self, device: torch.device | str) -> AllNCCriterion:
        self.loss.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return self.loss.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss.load_state_dict(state)

    @property
    def last_terms(self) -> dict[str, Tensor | float]:
        return self.loss.last_terms

    def __call__(
        self,
        out: Any,
        y_a: Tensor,
        y_b: Tensor | None,
        lam: float,
        rev: tuple[Any, Tensor] | None = None,
        network: nn.Module | None = None,
    ) -> Tensor:
        from .heads import CosineHead, LinearHead

        net = network if network is not None else self.network
        rev_logits = rev_labels = None
        if rev is not None:
            out_rev, rev_labels = rev
            head = getattr(net, "head", None)
            if self.loss.gbbn_detach and isinstance(head, (LinearHead, CosineHead)):
                rev_logits = AllNCObjective.reversed_logits(head, out_rev.features)
            else:
                rev_logits = out_rev.logits
        mixed = y_b is not None and lam < 1.0
        self.loss.train(net.training)
        return self.loss(
            out.features,
            out.logits,
            y_a,
            net.classifier_weight(),
            epoch=self.epoch,
            epochs=self.epochs,
            rev_logits=rev_logits,
            rev_labels=rev_labels,
            target_b=y_b if mixed else None,
            lam=lam if mixed else 1.0,
        )


def build_allnc_criterion(
    cfg: Any, network: nn.Module, class_counts: Sequence[int]
) -> AllNCCriterion:
    """The AllNC criterion for ``network`` (a backbone + head with ``classifier_weight()``),
    from ``cfg.allnc`` and ``cfg.optim.epochs``."""
    weight = network.classifier_weight()
    num_classes, dim = int(weight.shape[0]), int(weight.shape[1])
    if len(class_counts) != num_classes:
        raise ValueError(
            f"class_counts has {len(class_counts)} classes but the classifier has {num_classes}"
        )
    objective = AllNCObjective.from_config(cfg.allnc, num_classes, dim)
    return AllNCCriterion(objective, network, cfg.optim.epochs)
