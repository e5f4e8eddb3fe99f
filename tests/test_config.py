import warnings

import pytest

from ncollapse.composition import compose
from ncollapse.config import config_diff, config_to_dict, parse_override, scale_schedule
from ncollapse.errors import ConfigError
from ncollapse.losses import drw_start


def official(path=None, overrides=(), extra=None):
    """The official CIFAR-LT recipe (the config's defaults), or the recipe file at ``path``,
    with overrides."""
    cfg = compose(path or "cifar10_lt", overrides=extra or overrides)
    return cfg


def test_defaults_are_the_official_recipe():
    cfg = official()
    o = cfg.optim
    assert (o.lr, o.momentum, o.weight_decay, o.batch_size, o.epochs) == (0.1, 0.9, 2e-4, 128, 200)
    assert (o.warmup_epochs, o.milestones, o.mixup_alpha) == (5, [160, 180], 1.0)
    assert cfg.loss.name == "dr" and cfg.loss.balance == "batch" and cfg.model.head == "etf"


def test_unknown_key_names_key_and_closest():
    with pytest.raises(ConfigError) as info:
        official(overrides=["optim.lrr=0.2"])
    assert "optim.lrr" in str(info.value) and "'optim.lr'" in str(info.value)
    with pytest.raises(ConfigError, match="did you mean 'data.imbalance'"):
        official(extra={"data": {"imbalanse": 0.1}})


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("optim.learning_rate", "optim.lr"),  # an abbreviation, not the longest common run
        ("optim.lrr", "optim.lr"),
        ("optim.LR", "optim.lr"),
        ("optim.lr_factor", "optim.lr_factors"),
        ("optim.wd", "optim.weight_decay"),
        ("optim.bs", "optim.batch_size"),
        ("optim.epoch", "optim.epochs"),
        ("optim.decay", "optim.weight_decay"),
        ("data.imbalance_ratio", "data.imbalance"),
        ("run.thread", "run.threads"),
        ("loss.lr", "optim.lr"),  # the right key in the wrong section
        ("loss.learning_rate", "optim.lr"),
        ("lr", "optim.lr"),
    ],
)
def test_unknown_key_suggests_the_key_meant(typed, meant):
    from ncollapse.config import Config
    from ncollapse.config.io import all_keys
    from ncollapse.errors import closest

    assert closest(typed, all_keys(Config)) == meant
    with pytest.raises(ConfigError, match=f"did you mean '{meant}'\\?"):
        official(overrides=[f"{typed}=0.1"])


def test_unknown_key_without_a_close_one_lists_its_section():
    with pytest.raises(ConfigError, match="optim has: .*optim.lr,") as info:
        official(overrides=["optim.zzzzzz=1"])
    assert "did you mean" not in str(info.value) and "data." not in str(info.value)
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        official(overrides=["optm.lr=1"])


def test_closest_on_plain_names():
    from ncollapse.errors import closest
    from ncollapse.methods import METHODS

    assert closest("etfdr", METHODS) == "etf_dr"
    assert closest("ldam", METHODS) == "ldam_drw"
    assert closest("cifar11", ["cifar10", "cifar100", "digits"]) == "cifar10"
    assert closest("zzzz", ["cifar10", "digits"]) is None


@pytest.mark.parametrize("value", ["0", "-0.5", "100", "1.5"])
def test_imbalance_range(value):
    with pytest.raises(ConfigError) as info:
        official(overrides=[f"data.imbalance={value}"])
    assert "(0, 1]" in str(info.value)
    if value == "100":
        assert "r = 0.01" in str(info.value)


def test_types_are_checked_and_coerced():
    cfg = official(overrides=["optim.lr=5e-2", "optim.milestones=[10,20]", "run.amp=false"])
    assert cfg.optim.lr == 0.05 and cfg.optim.milestones == [10, 20] and cfg.run.amp is False
    with pytest.raises(ConfigError, match="optim.epochs"):
        official(overrides=["optim.epochs=ten"])
    with pytest.raises(ConfigError, match="did you mean 'etf'"):
        compose(overrides=["model.head=etff"])


def test_dr_needs_etf_head():
    with pytest.raises(ConfigError, match="model.head=etf"):
        official(overrides=["model.head=linear", "loss.name=dr"])


def test_file_and_bad_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\noptim:\n  lr: 0.2\n")
    assert official(p).optim.lr == 0.2
    with pytest.raises(ConfigError, match="neither a file nor a known recipe"):
        official(tmp_path / "missing.yaml")
    p.write_text("[1, 2")
    with pytest.raises(ConfigError, match="cannot parse"):
        official(p)


def test_extends(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.3\n  epochs: 7\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\noptim:\n  epochs: 9\n")
    cfg = official(tmp_path / "child.yaml")
    assert cfg.optim.lr == 0.3 and cfg.optim.epochs == 9


def test_scale_schedule_scales_the_decays_and_keeps_the_warmup():
    cfg = official(overrides=["loss.name=ce", "loss.drw_epoch=160"])
    short = scale_schedule(cfg, 30)
    assert short.optim.epochs == 30
    assert short.optim.milestones == [24, 27]
    assert short.optim.warmup_epochs == 5  # kept: a warm-up counts steps, not a share
    assert short.loss.drw_epoch == 24
    assert cfg.optim.epochs == 200  # the original is untouched
    # ... capped at a sixth of the new schedule, unrounded (ramped per batch); milestones round
    # to whole epochs, halves up (not to even)
    assert scale_schedule(cfg, 20).optim.warmup_epochs == pytest.approx(20 / 6, abs=1e-6)
    assert scale_schedule(cfg, 3).optim.warmup_epochs == 0.5
    assert scale_schedule(cfg, 400).optim.warmup_epochs == 5
    assert isinstance(scale_schedule(cfg, 400).optim.warmup_epochs, int)
    assert scale_schedule(cfg, 4).optim.milestones == [3, 4]  # 3.2, 3.6
    assert scale_schedule(cfg, 25).optim.milestones == [20, 23]  # 20, 22.5
    assert scale_schedule(cfg, 25).loss.drw_epoch == 20
    no_warmup = official(overrides=["optim.warmup_epochs=0"])
    assert scale_schedule(no_warmup, 20).optim.warmup_epochs == 0


def test_drw_start_defaults_to_the_first_milestone():
    assert drw_start(official(overrides=["loss.name=ce"])) is None  # off by default
    on = official(overrides=["loss.name=ldam", "model.head=cosine", "loss.drw=true"])
    assert on.loss.drw_epoch is None and drw_start(on) == 160  # the first lr decay of 200
    assert drw_start(scale_schedule(on, 30)) == 24  # moves with the shortened schedule
    assert drw_start(scale_schedule(on, 10)) == 8
    own = official(overrides=["loss.name=ce", "loss.drw=true", "loss.drw_epoch=100"])
    assert drw_start(own) == 100
    assert drw_start(official(overrides=["loss.name=ce", "loss.drw_epoch=7"])) == 7
    with pytest.raises(ConfigError, match="set loss.drw_epoch=N"):
        official(overrides=["loss.name=ce", "loss.drw=true", "optim.milestones=[]"])
    with pytest.raises(ConfigError, match="loss.name=allnc has none"):
        official(overrides=["loss.name=allnc", "model.head=linear", "loss.drw=true"])
    # the DR loss defers its class weights (loss.balance) the same way
    assert drw_start(official(overrides=["loss.drw=true"])) == 160
    with pytest.raises(ConfigError, match="loss.drw_epoch must be >= 0"):
        official(overrides=["loss.name=ce", "loss.drw_epoch=-1"])


def test_drw_that_never_switches_on_warns():
    with pytest.warns(UserWarning, match="starts at epoch 160 but the run has 100 epochs"):
        official(overrides=["loss.name=ce", "loss.drw_epoch=160", "optim.epochs=100"])


def test_ldam_on_a_linear_head_warns_and_names_the_cosine_head():
    with pytest.warns(UserWarning, match="set model.head=cosine"):
        official(overrides=["loss.name=ldam", "model.head=linear"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        official(overrides=["loss.name=ldam", "model.head=cosine"])


def test_override_parsing_and_diff():
    assert parse_override("a.b=1") == {"a": {"b": 1}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("nonsense")
    a = config_to_dict(official())
    b = config_to_dict(official(overrides=["optim.lr=0.2"]))
    assert config_diff(a, b) == ["optim.lr: 0.1 -> 0.2"]


# ------------------------------------------------------------------ each baseline's own recipe


@pytest.mark.parametrize("epochs", [200, 30])
def test_baseline_presets_bring_their_papers_recipes(epochs):
    """Pinned schedules: LDAM-DRW and focal as the LDAM code (x0.01, x0.0001 at the decays, no
    mixup), LA as its release (20/1241 warm-up, x0.1 at 604/926/1128 of 1241 epochs, Nesterov,
    wd 2e-4), BS as its release (4x batch, half lr, wd 5e-4, cosine after 800/13000 of the
    run); the run's length stays the recipe's; --shared-recipe keeps the ETF + DR recipe."""
    from ncollapse.composition import compose

    def optim(method, shared=False):
        return compose("cifar10_lt", method, epochs=epochs, shared_recipe=shared).optim

    etf = optim("etf_dr")
    assert (etf.mixup_alpha, etf.schedule, etf.lr_factors) == (1.0, "step", None)
    for m in ("ldam_drw", "focal"):
        o = optim(m)
        assert (o.mixup_alpha, o.lr_factors, o.milestones) == (0.0, [0.01, 0.0001], etf.milestones)
    la = optim("la")
    assert la.nesterov and la.mixup_alpha == 0.0 and la.weight_decay == 2e-4
    assert la.milestones == [round(epochs * m / 1241) for m in (604, 926, 1128)]
    # the preset's warm-up over the recipe's 200 epochs, kept by --epochs up to a sixth of it
    assert la.warmup_epochs == pytest.approx(min(200 * 20 / 1241, epochs / 6), rel=1e-3)
    bs = optim("bs")
    assert (bs.batch_size, bs.lr, bs.weight_decay, bs.schedule) == (512, 0.05, 5e-4, "cosine")
    assert bs.warmup_epochs == pytest.approx(min(200 * 800 / 13000, epochs / 6), rel=1e-3)
    for m in ("la", "bs", "focal", "ldam_drw", "ce"):
        o = optim(m)
        assert o.epochs == epochs
        shared = optim(m, shared=True)
        assert (shared.mixup_alpha, shared.schedule, shared.batch_size) == (1.0, "step", 128)
    assert optim("allnc", shared=True).mixup_alpha == 0.0  # no mixup is part of AllNC itself


def test_a_recipe_key_that_is_not_a_string_is_a_config_error(tmp_path):
    """YAML's "?" alone is the mapping {None: None}: an unknown key, not a TypeError."""
    p = tmp_path / "q.yaml"
    p.write_text("?")
    with pytest.raises(ConfigError, match="unknown config key 'None'"):
        official(p)
