"""The project's own mutation check: plant each bug of a fixed list in a copy of the sources and
see that the fast tests named for it fail ("killed"); one that passes ("survived") is a hole in
the tests. docs/testing.md describes it.

    python tools/mutate.py               # every mutation; exit 1 when one survives
    python tools/mutate.py -k ema -k dr  # those whose id contains "ema" or "dr"
    python tools/mutate.py --list        # the list, with the tests each runs
    python tools/mutate.py --check       # only that every mutation still applies (no tests)
    python tools/mutate.py -j 2          # two at a time (a copy of the tree each)

Each mutation names a file under ``src/ncollapse/``, a piece of its text that must occur there
exactly once (a refactor that moves it makes ``--check`` and ``tests/test_mutate.py`` fail, so the
list is kept up to date), what replaces it, and the tests that must catch it. The checkout is
never touched: the tree (``src/``, ``tests/``, ``pyproject.toml``, ``configs``) is copied to a
temporary folder, each mutation is written into the copy, its tests run there with the copy's
``src`` first on ``PYTHONPATH``, and the file is put back. First the union of all the tests runs
once on the unmutated copy: a test that fails without a bug would kill everything (then the run
stops). A test run longer than ``--timeout`` seconds counts as killed (a hang is caught too).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-W", "ignore"]


@dataclass(frozen=True)
class Mutation:
    """One planted bug: in ``src/ncollapse/<path>``, ``old`` (found exactly once) becomes
    ``new``; ``tests`` (pytest node ids under tests/) must then fail."""

    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


def _cat(case: str) -> str:
    """The node id of a reliability catalogue case."""
    return f"tests/test_reliability.py::test_catalogue[{case}]"


M = Mutation
LOSSES = "tests/test_losses.py::"
FAST = "tests/test_fastpath.py::"
SWEEP = "tests/test_sweep.py::"
ENGINE = "tests/test_engine.py::"
MUTATIONS: list[Mutation] = [
    # ------------------------------------------------------------ the weight average
    M("ema-lerp-weight", "engine/ema.py",
      "return 1.0 - min(self.decay, (1.0 + updates) / (10.0 + updates))",
      "return min(self.decay, (1.0 + updates) / (10.0 + updates))",
      (FAST + "test_weight_average_moves_by_exactly_one_minus_the_warmed_up_decay",),
      "the average moves by d instead of 1 - d (issue 26's first survivor)"),
    M("ema-no-warmup", "engine/ema.py",
      "return 1.0 - min(self.decay, (1.0 + updates) / (10.0 + updates))",
      "return 1.0 - self.decay",
      (FAST + "test_weight_average_moves_by_exactly_one_minus_the_warmed_up_decay",),
      "the decay's warm-up dropped: a late average is dominated by its first weights"),
    M("ema-int-buffers", "engine/ema.py",
      "                a.data.copy_(x.data)",
      "                pass",
      (FAST + "test_weight_average_keeps_fixed_buffers_and_tracks_weights",),
      "BatchNorm's batch counter not copied into the average"),
    # ------------------------------------------------------------ the training loop
    M("mixup-boundary", "engine/loop.py",
      "until is None or epoch < until",
      "until is None or epoch <= until",
      (FAST + "test_mixup_stops_at_exactly_optim_mixup_epochs",),
      "mixup kept on at epoch == mixup_epochs (issue 26's second survivor)"),
    M("mixup-swapped-partner", "engine/mixup.py",
      "mixed = lam * x + (1.0 - lam) * x[perm]",
      "mixed = (1.0 - lam) * x + lam * x[perm]",
      (ENGINE + "test_mixup_is_a_convex_combination_and_off_at_zero",),
      "the image weights of mixup swapped against the label weights"),
    M("batches-single-sample-tail", "engine/batches.py",
      "return full + int(tail >= 2 or full == 0)",
      "return full + int(tail >= 1 or full == 0)",
      (ENGINE + "test_a_last_batch_of_one_sample_is_skipped_not_a_crash",),
      "a last batch of one sample kept (BatchNorm cannot train on it)"),
    M("shards-overlap", "engine/distributed.py",
      "return rank * n // world_size, (rank + 1) * n // world_size",
      "return rank * n // world_size, (rank + 1) * n // world_size + 1",
      ("tests/test_distributed.py::test_shards_are_contiguous_and_cover_the_batch",),
      "the ranks' shares of a batch overlap"),
    # ------------------------------------------------------------ the divergence guard
    M("guard-parameters-only", "engine/callbacks.py",
      "for name, t in (*net.named_parameters(), *net.named_buffers())",
      "for name, t in net.named_parameters()",
      (_cat("train: NaN only in a BatchNorm buffer"),),
      "NaN in a BatchNorm buffer alone passes the guard (issue 26's third survivor)"),
    M("guard-no-kept-epoch", "engine/callbacks.py",
      "if saved and trainer.run_dir is not None",
      "if False",
      (_cat("train: NaN after a checkpoint"),),
      "the divergence message no longer names the checkpoint kept"),
    M("checkpoint-nan-accepted", "rundir.py",
      "        if bad:\n            raise UserError(\n                f\"{self.checkpoint_path} holds",
      "        if False:\n            raise UserError(\n                f\"{self.checkpoint_path} holds",
      (_cat("resume: a checkpoint with NaN weights"),),
      "a checkpoint of NaN weights resumed (issue 26: a NaN model.pt claiming 82.69 %)"),
    M("model-nan-accepted", "rundir.py",
      "        if bad:\n            raise UserError(\n                f\"{path} holds",
      "        if False:\n            raise UserError(\n                f\"{path} holds",
      (_cat("evaluate: model.pt with NaN weights"),),
      "evaluate measures NaN weights (10 % with no warning)"),
    # ------------------------------------------------------------ dot regression
    M("dr-absent-partner", "losses/dr.py",
      "gamma / counts.clamp_min(1.0), torch.ones_like(counts)",
      "gamma / counts.clamp_min(1.0), torch.zeros_like(counts)",
      (LOSSES + "test_dr_partner_of_a_class_absent_from_the_batch_weighs_one",),
      "a class absent from the un-mixed batch weighted 0 (issue 26's fourth survivor)"),
    M("dr-gamma-over-all-classes", "losses/dr.py",
      "gamma = target.numel() / present.sum().to(torch.float32)",
      "gamma = target.numel() / float(num_classes)",
      (LOSSES + "test_dr_batch_balance_equals_official_column_scaling",),
      "B/K instead of B/|U| in the batch weights"),
    M("dr-no-stop-gradient", "losses/dr.py",
      "h_norm = features.detach().norm(dim=1).clamp_min(1e-8)",
      "h_norm = features.norm(dim=1).clamp_min(1e-8)",
      (LOSSES + "test_dr_gradient_parallel_to_target_vertex",),
      "the norm not detached: the gradient leaves the target vertex's direction"),
    M("dr-no-half", "losses/dr.py",
      "per = 0.5 * (dot - w.norm(dim=1) * h_norm) ** 2 / h_norm",
      "per = (dot - w.norm(dim=1) * h_norm) ** 2 / h_norm",
      (LOSSES + "test_dr_unit_vectors_is_half_cos_minus_one_squared",),
      "the loss doubled"),
    M("dr-global-weights-untempered", "losses/dr.py",
      "weight = ((c.sum() / c.numel()) / c) ** self.balance_power",
      "weight = (c.sum() / c.numel()) / c",
      (LOSSES + "test_dr_balance_power_tempers_the_global_weights",),
      "loss.balance_power ignored: the global weights always n_c^-1"),
    M("dr-global-weights-unnormalised", "losses/dr.py",
      "weight = weight * (c.sum() / (c * weight).sum())",
      "weight = weight",
      (LOSSES + "test_dr_balance_power_tempers_the_global_weights",),
      "tempered global weights not brought back to a mean of 1 per sample"),
    # ------------------------------------------------------------ the other losses
    M("la-sign", "losses/logit.py",
      "adjusted = logits + self.tau * self.log_prior",
      "adjusted = logits - self.tau * self.log_prior",
      (LOSSES + "test_la_and_balanced_softmax_formulas",),
      "logit adjustment pushes the wrong way"),
    M("ldam-exponent", "losses/logit.py",
      "m = c.pow(-0.25)",
      "m = c.pow(-0.5)",
      (LOSSES + "test_ldam_margins_and_loss",),
      "LDAM margins n^(-1/2) instead of n^(-1/4)"),
    # ------------------------------------------------------------ geometry and heads
    M("etf-scale", "geometry.py",
      "frame = math.sqrt(k / (k - 1)) * p @ centring",
      "frame = p @ centring",
      ("tests/test_geometry.py",),
      "simplex ETF vertices not of unit norm"),
    M("etf-head-no-l2", "heads.py",
      "            h = h / h.norm(dim=1, keepdim=True).clamp_min(1e-8)",
      "            h = h",
      ("tests/test_heads.py",),
      "the ETF head's features not normalised (bn_l2)"),
    # ------------------------------------------------------------ measurement
    M("accuracy-many-threshold", "metrics/accuracy.py",
      "many = [k for k, c in enumerate(counts) if c > MANY_THRESHOLD]",
      "many = [k for k, c in enumerate(counts) if c >= MANY_THRESHOLD]",
      ("tests/test_metrics.py",),
      "a class of exactly 100 images counted as many-shot"),
    M("accuracy-index-groups", "metrics/accuracy.py",
      "        a, b = 3, 7",
      "        a, b = 3, 6",
      ("tests/test_metrics.py",),
      "CIFAR-10's head/mid/tail index ranges"),
    M("nc3-unnormalised", "metrics/kernels.py",
      "def nc3_distance(classifier: Any, class_means: Any) -> float:",
      "def nc3_distance(classifier: Any, class_means: Any) -> float:\n    return 0.0",
      ("tests/test_metrics.py",),
      "NC3 always zero"),
    # ------------------------------------------------------------ data
    M("longtail-exponent", "data/longtail.py",
      "return [int(n_max * (r ** (i / (k - 1.0)))) for i in range(k)]",
      "return [int(n_max * (r ** (i / float(k)))) for i in range(k)]",
      ("tests/test_longtail.py",),
      "the exponential profile does not reach n_max * r"),
    M("longtail-rng-leak", "data/longtail.py",
      "    finally:\n        np.random.set_state(state)",
      "    finally:\n        pass",
      ("tests/test_longtail.py",),
      "subsetting consumes the global generator the training seed owns"),
    M("empty-classes-accepted", "data/longtail.py",
      "    if not empty:\n        return",
      "    if True:\n        return",
      (_cat("classes: --imbalance 0.001"),),
      "classes without training images trained and scored (issue 26)"),
    M("list-labels-unchecked", "data/stream.py",
      "    if len(present) == k and k >= 2:\n        return k",
      "    if True:\n        return k",
      (_cat("classes: list file, a label only the test list has"),),
      "a label only the test list has becomes a phantom class (issue 26)"),
    M("validation-overlaps-subset", "data/split.py",
      "    free[np.asarray(used, dtype=np.int64)] = False",
      "    free[np.asarray(used, dtype=np.int64)] = True",
      ("tests/test_data_split.py",),
      "validation images drawn from the training subset"),
    # ------------------------------------------------------------ schedules and config
    M("warmup-off-by-one", "engine/schedule.py",
      "return base_lr * (epoch + 1) / warmup_epochs",
      "return base_lr * epoch / warmup_epochs",
      (ENGINE + "test_official_schedule",),
      "the warm-up starts at lr 0"),
    M("warmup-zero-divides", "engine/schedule.py",
      "if t <= warm and warm > 0:",
      "if t <= warm:",
      (FAST + "test_smooth_schedules_without_a_warmup_start_at_the_full_rate",),
      "optim.warmup_epochs=0 with a cosine or linear schedule divides by zero (issue 27)"),
    M("milestone-late", "engine/schedule.py",
      "passed = sum(1 for m in milestones if epoch >= m)",
      "passed = sum(1 for m in milestones if epoch > m)",
      (FAST + "test_step_schedule_with_per_milestone_factors",),
      "the rate decays one epoch after its milestone"),
    M("batch-size-one", "config/checks.py",
      "    if o.batch_size < 2:",
      "    if o.batch_size < 1:",
      (_cat("sizes: optim.batch_size=1"),),
      "a batch of one sample accepted (BatchNorm traceback, issue 26)"),
    # ------------------------------------------------------------ run directories
    M("metrics-torn-line-fatal", "rundir.py",
      "            if i == len(lines) - 1:",
      "            if False:",
      (_cat("resume: torn last metrics line"),),
      "a torn last metrics line (a kill while appending) makes the run unresumable"),
    M("run-name-dotdot", "rundir.py",
      'if not name or name in (".", "..") or not _NAME.match(name):',
      "if not name or not _NAME.match(name):",
      (_cat("rundir: --set run.name=.."),),
      "run.name=.. writes beside --out"),
    M("write-failure-unnamed", "atomic.py",
      "            raise write_error(path, exc) from None",
      "            raise",
      (_cat("disk full: train"),),
      "a full disk gives a traceback instead of the path and the fix"),
    M("resume-unrecorded", "runner.py",
      "            writer.write_env(resume_record(saved.env, device, cfg.run.amp, position))",
      "            pass",
      ("tests/test_cli.py::test_a_resume_is_recorded_in_env_json_with_its_own_threads",),
      "a run resumed with other threads or on another machine says nothing of it in env.json"),
    M("resume-threads-silent", "runner.py",
      "    if started and threads.threads != started and cpu_rounding and dist.is_main:",
      "    if False:",
      ("tests/test_cli.py::test_a_resume_is_recorded_in_env_json_with_its_own_threads",),
      "a resume with another thread count than the run started with gives no warning"),
    # ------------------------------------------------------------ sweeps
    M("sweep-deletes-foreign-cells", "sweep/execute.py",
      "    foreign = [e for e in entries if not _ours(e)]",
      "    foreign = []",
      (_cat("sweep: a user's folder named like a cell"),),
      "a user's folder named like a cell deleted (issue 26's data loss)"),
    M("sweep-no-resume", "sweep/execute.py",
      '            if state == "resumable":',
      "            if False:",
      (SWEEP + "test_interrupted_sweep_resumes_and_skips_finished",),
      "an interrupted cell started again instead of resumed from its checkpoint"),
    M("sweep-pack-unmarked", "sweep/pack.py",
      '                make_ready(name, status, lambda msg, n=name: log(f"sweep: --pack: {n}: {msg}"))',
      "                pass",
      ("tests/test_pack.py::test_sweep_pack_marks_the_cells_it_makes_and_trains_them_again_after_a_kill",),
      "a packed cell made without its .created mark: after a kill the rerun refuses it as foreign"),
    M("sweep-std-population", "sweep/results.py",
      "/ (len(xs) - 1)  # ddof = 1",
      "/ len(xs)  # ddof = 1",
      (SWEEP + "test_interrupted_sweep_resumes_and_skips_finished",),
      "the spread over seeds as a population standard deviation"),
]  # fmt: skip


# ---------------------------------------------------------------------- applying and running


def apply(m: Mutation, root: Path) -> tuple[Path, str]:
    """Write ``m`` into the tree at ``root``; returns the file and its original text. A
    mutation whose text is not found exactly once raises ValueError (the list is stale)."""
    path = root / "src" / "ncollapse" / m.path
    if not path.is_file():
        raise ValueError(f"{m.id}: {m.path} does not exist under src/ncollapse")
    text = path.read_text()
    n = text.count(m.old)
    if n != 1:
        raise ValueError(f"{m.id}: its text occurs {n} times in {m.path}, not once: {m.old!r}")
    path.write_text(text.replace(m.old, m.new))
    return path, text


def check(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """What is wrong with the list against the tree at ``root`` (nothing is written): stale
    texts, ids twice, no-op replacements, tests that do not exist."""
    problems, seen = [], set()
    for m in mutations:
        if m.id in seen:
            problems.append(f"{m.id}: the id is used twice")
        seen.add(m.id)
        if m.old == m.new:
            problems.append(f"{m.id}: the replacement changes nothing")
        path = root / "src" / "ncollapse" / m.path
        n = path.read_text().count(m.old) if path.is_file() else -1
        if n != 1:
            problems.append(f"{m.id}: its text occurs {max(n, 0)} times in {m.path}, not once")
        for t in m.tests:
            file, _, name = t.partition("::")
            if not (root / file).is_file():
                problems.append(f"{m.id}: no test file {file}")
            elif name and "[" not in name and f"def {name}(" not in (root / file).read_text():
                problems.append(f"{m.id}: no test {t}")
    return problems


def copy_tree(dest: Path) -> Path:
    """The parts of the checkout the tests need, copied to ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for name in ("src", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore, symlinks=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    if (ROOT / "configs").exists():
        os.symlink("src/ncollapse/configs", dest / "configs")
    return dest


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """``(outcome, seconds, output tail)``: ``passed``, ``failed`` or ``timeout``."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, *PYTEST, *tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, ""
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    outcome = "passed" if proc.returncode == 0 else "failed"
    return outcome, time.monotonic() - start, " | ".join(tail)


def mutate_one(m: Mutation, tree: Path, timeout: float) -> tuple[Mutation, str, float, str]:
    path, original = apply(m, tree)
    try:
        outcome, seconds, tail = run_tests(tree, m.tests, timeout)
    finally:
        path.write_text(original)
    verdict = {"failed": "killed", "timeout": "killed (timeout)", "passed": "SURVIVED"}[outcome]
    return m, verdict, seconds, tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-k", action="append", default=[], help="only ids containing this (repeatable)")
    p.add_argument("--list", action="store_true", help="print the mutations and their tests")
    p.add_argument("--check", action="store_true", help="only check that every mutation applies")
    p.add_argument("-j", type=int, default=1, help="mutations tested at once (default 1)")
    p.add_argument("--timeout", type=float, default=300, help="seconds a test run may take")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    args = p.parse_args(argv)

    chosen = [m for m in MUTATIONS if not args.k or any(k in m.id for k in args.k)]
    if args.list:
        for m in chosen:
            print(f"{m.id:<30} {m.path:<22} {m.why}\n{'':<30} tests: {' '.join(m.tests)}")
        print(f"\n{len(chosen)} mutations")
        return 0
    problems = check(MUTATIONS)
    if problems:
        print("the mutation list is stale:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"{len(MUTATIONS)} mutations, each applies once")
        return 0
    if not chosen:
        print("no mutation matches", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ncollapse-mutate-") as tmp:
        trees = [copy_tree(Path(tmp) / f"tree{i}") for i in range(max(1, args.j))]
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            outcome, seconds, tail = run_tests(trees[0], tests, args.timeout * 3)
            print(
                f"baseline: {len(tests)} test selections {outcome} in {seconds:.0f} s", flush=True
            )
            if outcome != "passed":
                print(f"the tests fail without a mutation: {tail}", file=sys.stderr)
                return 2
        free = list(trees)
        survived = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(trees)) as pool:
            futures = {}
            for m in chosen:
                if not free:
                    done = next(concurrent.futures.as_completed(futures))
                    survived += _report(done.result())
                    free.append(futures.pop(done))
                tree = free.pop()
                futures[pool.submit(mutate_one, m, tree, args.timeout)] = tree
            for done in concurrent.futures.as_completed(futures):
                survived += _report(done.result())
    print(
        f"\n{len(chosen)} mutations: {len(chosen) - len(survived)} killed, {len(survived)} survived"
    )
    if survived:
        print("survived: " + ", ".join(survived), file=sys.stderr)
    return 1 if survived else 0


def _report(result: tuple[Mutation, str, float, str]) -> list[str]:
    m, verdict, seconds, tail = result
    print(f"{verdict:<17} {m.id:<30} {seconds:5.0f} s  {m.why}", flush=True)
    if verdict == "SURVIVED":
        print(f"{'':<17} tests: {' '.join(m.tests)}: {tail}", flush=True)
        return [m.id]
    return []


if __name__ == "__main__":
    sys.exit(main())
