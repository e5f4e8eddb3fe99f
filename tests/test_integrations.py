"""The drop-ins: ETFClassifier (logits out) and DRLoss (``loss(logits_or_output, target)``) in a
plain loop, the torchmetrics CollapseMetric and the Lightning CollapseCallback, each checked
against the package's own DR loss and ``collapse_metrics``."""

import pytest
import torch
from torch import nn

import ncollapse
from ncollapse import DotRegressionLoss, DRLoss, ETFClassifier, ETFHead, collapse_metrics


def _data(n=240, d=16, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, d, generator=g) + 4.0 * nn.functional.one_hot(y, d).float()
    return x, y


@pytest.mark.parametrize("balance", ["batch", "none", "global"])
@pytest.mark.parametrize("mixup", [False, True])
def test_dr_from_logits_is_the_dr_of_the_features(balance, mixup):
    torch.manual_seed(0)
    x, y = _data()
    counts = torch.bincount(y).tolist()
    backbone = nn.Linear(16, 12)
    clf = ETFClassifier(12, 6, scale=3.0)
    ours = DRLoss(clf, balance=balance, class_counts=counts, reg_lam=0.1)
    ref = DotRegressionLoss(balance=balance, class_counts=counts, reg_lam=0.1, scale=3.0)
    extra = {"target_b": y.flip(0), "lam": 0.3} if mixup else {}

    logits = clf(backbone(x))
    feats = clf.last_output.features
    assert logits.shape == (240, 6) and torch.equal(clf.features, feats)
    want = ref(feats, y, clf.frame, **extra)
    (g_want,) = torch.autograd.grad(want, backbone.weight, retain_graph=True)
    # the classifier's own logits: its kept features are used
    got = ours(logits, y, **extra)
    (g_got,) = torch.autograd.grad(got, backbone.weight, retain_graph=True)
    assert torch.equal(got, want) and torch.equal(g_got, g_want)
    # other logits tensors (a copy, as after an AMP cast): the DR of unit features from them
    cos = ours(logits * 1.0, y, **extra)
    (g_cos,) = torch.autograd.grad(cos, backbone.weight, retain_graph=True)
    assert cos.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.allclose(g_cos, g_want, rtol=1e-4, atol=1e-7)
    # a HeadOutput
    assert torch.equal(ours(clf.last_output, y, **extra), want)


def test_other_feature_norms_need_the_classifiers_own_output():
    x, y = _data()
    clf = ETFClassifier(16, 6, feature_norm="bn")
    loss = DRLoss(clf)
    logits = clf(x)
    assert torch.equal(loss(logits, y), DotRegressionLoss()(clf.features, y, clf.frame))
    with pytest.raises(ValueError, match="feature_norm='bn'.*do not determine the features"):
        loss(logits.detach().clone(), y)
    with pytest.raises(ValueError, match="fixed-ETF classifier"):
        DRLoss(nn.Linear(4, 2))


def test_etf_classifier_is_an_etf_head_returning_logits():
    head, clf = ETFHead(16, 6, seed=3), ETFClassifier(16, 6, seed=3)
    clf.load_state_dict(head.state_dict())
    head.eval(), clf.eval()
    x, _ = _data()
    assert torch.equal(clf(x), head(x).logits)
    assert torch.equal(clf.output(x).features, head(x).features)


def test_the_five_line_drop_in_learns():
    """nn.Linear -> ETFClassifier, CrossEntropyLoss -> DRLoss, nothing else changed."""
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), ETFClassifier(32, 6))
    criterion = DRLoss(model[-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert losses[-1] < 0.5 * losses[0] and acc > 0.9, (losses[-1], acc)


def test_torchmetrics_collapse_metric_equals_collapse_metrics():
    tm = pytest.importorskip("ncollapse.integrations.torchmetrics")
    torch.manual_seed(0)
    x, y = _data(n=300)
    clf = ETFClassifier(16, 6)
    clf.eval()
    with torch.no_grad():
        logits = clf(x)
    h = clf.features
    want = collapse_metrics(h, y, classifier=clf.classifier_weight())
    metric = tm.CollapseMetric(6, 16, classifier=clf.classifier_weight())
    for i in range(0, 300, 64):
        metric.update(h[i : i + 64], y[i : i + 64])
    for i in range(0, 300, 64):
        metric.update_nc4(h[i : i + 64], logits[i : i + 64])
    got = metric.compute()
    for key in ("nc1", "cdnv", "nc2_etf_error", "w_etf_error", "nc3", "nc4"):
        assert got[key].item() == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert "minority_collapse_means" in got or want["minority_collapse_means"] is None
    # two processes' statistics, side by side as torchmetrics gathers them: merged exactly
    a, b = tm.CollapseMetric(6, 16), tm.CollapseMetric(6, 16)
    a.update(h[:100], y[:100])
    b.update(h[100:], y[100:])
    for name in ("counts", "means", "class_ss", "scatter"):
        setattr(a, name, torch.cat([getattr(a, name), getattr(b, name)]))
    assert a.compute()["nc1"].item() == pytest.approx(want["nc1"], rel=1e-9)


def test_lightning_callback_logs_what_collapse_metrics_measures(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from ncollapse.integrations.lightning import CollapseCallback

    torch.manual_seed(0)
    x, y = _data()
    loader = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=40, shuffle=True)
    plain = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=64)

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), ETFClassifier(32, 6))
            self.loss = DRLoss(self.net[-1])

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return self.loss(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    model = Model()
    callback = CollapseCallback(plain, every_n_epochs=1)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=pl.loggers.CSVLogger(tmp_path),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    assert [h["epoch"] for h in callback.history] == [1, 2]
    model.eval()
    with torch.no_grad():
        model(x)
    clf = model.net[-1]
    want = collapse_metrics(clf.features, y, classifier=clf.classifier_weight())
    logged = trainer.callback_metrics
    for key in ("nc1", "nc2_etf_error", "nc3", "nc4", "w_etf_error"):
        assert logged[f"collapse/{key}"].item() == pytest.approx(want[key], rel=1e-5), key
        assert callback.history[-1][key] == pytest.approx(want[key], rel=1e-9), key
    csv = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "collapse/nc1" in csv.splitlines()[0]


def test_ncollapse_exports_the_drop_ins():
    assert ncollapse.ETFClassifier is ETFClassifier and ncollapse.DRLoss is DRLoss
