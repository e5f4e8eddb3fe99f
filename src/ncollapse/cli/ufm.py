"""``ncollapse ufm solve | threshold | converge | phase | samples``: the unconstrained feature model.

Argument parsing only; the work is in :mod:`ncollapse.ufm`. Every option is checked before
any solve starts; a bad value is one ``ncollapse: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys

from ..errors import UserError
from ..jsonsafe import dumps

DESCRIPTIONS = {
    "ufm": (
        "Simulate the unconstrained feature model (features and classifier as free variables, "
        "Mixon et al. 2020; Fang et al. 2021): solve one model, measure the minority-collapse "
        "threshold, compare how fast cross-entropy and dot-regression converge under a fixed "
        "simplex ETF, map minority collapse, and grow the sample size. See docs/ufm.md."
    ),
    "solve": (
        "Solve one UFM with the given class counts (float64, L-BFGS or the convex "
        "nuclear-norm form) and print its neural-collapse metrics."
    ),
    "threshold": (
        "Measure the regularisation lam at which the minority classes of a two-group problem "
        "collapse (learnable CE) and compare it with the theory sqrt(n_B)/N (Hong & Ling, 2023)."
    ),
    "converge": (
        "Count the iterations, and measure the convergence rate, of gradient descent on unit "
        "features under a fixed simplex ETF with the dot-regression and the cross-entropy loss "
        "(Yang et al., 2022), at the same step sizes (or each loss at its best step)."
    ),
    "phase": (
        "Write a PNG phase diagram of minority collapse over lam x n_A/n_B (learnable CE) with "
        "the theoretical boundary; cells whose solve did not settle are marked, not coloured."
    ),
    "samples": (
        "Grow n_B at a fixed ratio n_A/n_B and report how far the mean predictions of "
        "learnable CE are from a simplex ETF (Hong & Ling, 2023)."
    ),
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse's own errors as one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"ncollapse: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _print(obj, as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(dumps(obj, indent=2, default=str))
    else:
        print("\n".join(lines))


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _floats(text: str, name: str, allow_range: bool = True, limit: int = 10_000) -> list[float]:
    """A comma list of numbers, or ``lo:hi:num`` (num log-spaced values); at most ``limit``."""
    try:
        if allow_range and ":" in text:
            lo, hi, num = text.split(":")
            lo, hi, n = float(lo), float(hi), int(num)
            if not (0 < lo < hi and math.isfinite(hi)) or n < 2:
                raise ValueError
            if n > limit:
                raise UserError(f"bad {name} {text!r}: {n} values, the limit is {limit}")
            return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
        values = [float(v) for v in text.split(",")]
    except ValueError:
        form = "a comma list (0.001,0.003)" + (" or lo:hi:num (log-spaced)" if allow_range else "")
        raise UserError(f"bad {name} {text!r}: give {form}") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"bad {name} {text!r}: values must be finite numbers")
    return values


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def _solve(args: argparse.Namespace) -> int:
    from ..ufm import solve

    tail = None if args.tail is None else [int(v) for v in _floats(args.tail, "--tail", False)]
    sol = solve(
        args.counts, dim=args.dim, loss=args.loss, classifier=args.classifier,
        lam_w=args.lam_w, lam_h=args.lam_h, lam_b=args.lam_b, bias=args.bias,
        feature_norm=args.feature_norm, etf_scale=args.etf_scale, method=args.method,
        per_sample=args.per_sample, tail=tail, tol=args.tol, seed=args.seed,
    )  # fmt: skip
    m = sol.metrics
    keys = ("nc1", "nc2_etf_error", "w_etf_error", "nc3", "nc4", "minority_collapse_w",
            "minority_collapse_means", "minority_spread")  # fmt: skip
    lines = [
        f"UFM {sol.settings['loss']} / {sol.settings['classifier']} classifier, "
        f"K={len(sol.counts)}, N={sum(sol.counts)}, d={sol.settings['dim']}, "
        f"lam={sol.settings['lam']:.4g} (= 2 sqrt(lam_W lam_H)), method {sol.method}",
        f"objective {sol.objective:.8g}  loss {sol.loss:.6g}  iterations {sol.iterations}  "
        f"converged {sol.converged} (grad norm {sol.grad_norm:.2e})  {sol.seconds:.2f} s",
        f"  tail classes             {m.get('tail_classes')}",
        *(f"  {k:24s} {_fmt(m.get(k))}" for k in keys if k in m),
    ]
    if not sol.converged:
        lines.append("warning: the solver did not reach its tolerance; the metrics are provisional")
    _print(sol.to_dict(), args.json, lines)
    return 0


def _threshold(args: argparse.Namespace) -> int:
    from ..ufm import threshold

    r = threshold(args.ka, args.na, args.kb, args.nb, bias=args.bias, rel_tol=args.rel_tol)
    lines = [
        f"two groups: K_A={args.ka} x n_A={args.na}, K_B={args.kb} x n_B={args.nb}, "
        f"N={r['N']}, bias={args.bias}",
        f"measured threshold lam* = {r['measured']:.6g}  (bracket {r['bracket'][0]:.6g} .. "
        f"{r['bracket'][1]:.6g}, {r['solves']} convex solves, {r['seconds']:.2f} s)",
        f"theory sqrt(n_B)/N     = {r['theory']:.6g}  (relative error {r['relative_error']:+.2%})",
        "lam = 2 sqrt(lam_W lam_H); minority classes collapse for lam >= lam*",
    ]
    _print(r, args.json, lines)
    return 0


def _converge(args: argparse.Namespace) -> int:
    from ..ufm.rates import check_converge_args, converge

    if args.imbalance is not None:
        raise UserError(
            "ufm converge takes --ratio (imbalance ratio n_max/n_min >= 1, e.g. --ratio 1 100), "
            "not --imbalance (elsewhere in ncollapse an imbalance factor r in (0, 1])"
        )
    steps = None if args.steps is None else _floats(args.steps, "--steps", allow_range=False)
    combos = [(k, r) for k in args.k for r in args.ratio]
    for k, r in combos:  # every combination is checked before the first run
        default = (0.1,) if steps is None else steps
        check_converge_args(k, r, args.dim, args.nc3_tol, default, args.max_iter, 500, 0,
                            args.param, args.protocol)  # fmt: skip
    kw = {"dim": args.dim, "nc3_tol": args.nc3_tol, "steps": steps, "max_iter": args.max_iter,
          "param": args.param, "protocol": args.protocol}  # fmt: skip
    rows = [converge(k, r, **kw) for k, r in combos]
    head = f"iterations to NC3 < {args.nc3_tol:g}, fixed ETF, unit features ({args.param} GD)"
    if args.protocol == "best-step":
        lines = [f"{head}, each loss at its best step", f"{'K':>4} {'ratio':>6} {'DR it':>7} "
                 f"{'DR step':>9} {'CE it':>7} {'CE step':>9} {'CE/DR':>6}"]  # fmt: skip
        lines += [
            f"{r['num_classes']:>4} {r['ratio']:>6g} {_fmt(r['dr']['iterations']):>7} "
            f"{_fmt(r['dr']['step']):>9} {_fmt(r['ce']['iterations']):>7} "
            f"{_fmt(r['ce']['step']):>9} {_fmt(r['ratio_ce_over_dr']):>6}"
            for r in rows
        ]
    else:
        lines = [f"{head}, both losses at each step (rate: NC3 factor per iteration, "
                 f"second half of the run; '-' = not reached in {args.max_iter})",
                 f"{'K':>4} {'ratio':>6} {'step':>8} {'DR it':>7} {'DR rate':>8} {'CE it':>7} "
                 f"{'CE rate':>8}  fewer"]  # fmt: skip
        for r in rows:
            for run in r["runs"]:
                lines.append(
                    f"{r['num_classes']:>4} {r['ratio']:>6g} {run['step']:>8g} "
                    f"{_fmt(run['dr']['iterations']):>7} {_fmt(run['dr']['rate']):>8} "
                    f"{_fmt(run['ce']['iterations']):>7} {_fmt(run['ce']['rate']):>8}  "
                    f"{_fmt(run['fewer_iterations'])}"
                )
    _print(rows if len(rows) > 1 else rows[0], args.json, lines)
    return 0


def _phase(args: argparse.Namespace) -> int:
    from ..ufm import phase_diagram
    from ..ufm.phase import MAX_AXIS

    ratios = None if args.ratios is None else _floats(args.ratios, "--ratios", limit=MAX_AXIS)
    lams = None if args.lams is None else _floats(args.lams, "--lams", limit=MAX_AXIS)

    def progress(done: int, total: int) -> None:
        if total >= 1000:
            print(f"ncollapse: ufm phase: {done}/{total} cells", file=sys.stderr, flush=True)

    r = phase_diagram(args.ka, args.kb, args.nb, ratios=ratios, lams=lams, bias=args.bias,
                      out=args.out, max_iter=args.max_iter, progress=progress)  # fmt: skip
    lines = [f"phase diagram ({len(r['ratios'])} ratios x {len(r['lams'])} lams, "
             f"{r['seconds']:.1f} s) written to {r['png']}"]  # fmt: skip
    if r["unsettled"]:
        lines.append(f"{len(r['unsettled'])} cells did not settle within {args.max_iter} "
                     f"iterations (marked x, no value)")  # fmt: skip
    _print(r, args.json, lines)
    return 0


def _samples(args: argparse.Namespace) -> int:
    from ..ufm import sample_size_sweep

    nbs = [v for v in _floats(args.nb, "--nb", allow_range=False)]
    if not all(v.is_integer() and v > 0 for v in nbs) or len(nbs) > 100:
        raise UserError(f"bad --nb {args.nb!r}: give 1 to 100 positive integers, e.g. 10,100,1000")
    r = sample_size_sweep(args.ratio, [int(v) for v in nbs], k_a=args.ka, k_b=args.kb,
                          lam=args.lam, scaling=args.scaling, bias=args.bias)  # fmt: skip
    lines = [
        f"learnable CE, K_A={args.ka} x ratio*n_B, K_B={args.kb} x n_B, ratio {args.ratio:g}, "
        f"lam {args.lam:g} ({'divided by N' if args.scaling == 'sum' else 'as given'})",
        f"{'n_B':>10} {'mu':>10} {'ETF dist':>9} {'ETF err':>8} {'tail idx':>8}  settled",
    ]
    for row in r["rows"]:
        lines.append(
            f"{row['n_b']:>10} {row['mu']:>10.3g} {_fmt(row['etf_distance']):>9} "
            f"{_fmt(row['etf_error']):>8} {_fmt(row['minority_collapse_logits']):>8}  "
            f"{row['converged']}"
        )
    _print(r, args.json, lines)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "ufm",
        help="unconstrained feature model: solve, minority-collapse threshold, DR vs CE, phase",
        description=DESCRIPTIONS["ufm"],
    )
    p.error = _OneLineParser.error.__get__(p)  # one-line errors for 'ncollapse ufm' itself
    sub = p.add_subparsers(dest="ufm_command", metavar="UFM_COMMAND", parser_class=_OneLineParser)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    def command(name: str, help_: str):
        return sub.add_parser(name, help=help_, description=DESCRIPTIONS[name])

    s = command("solve", "solve one UFM and print its neural-collapse metrics")
    s.add_argument("--counts", required=True,
                   help="class counts, e.g. 500x5,100x5 (count x classes) or 500,100,100; "
                        "at most 200 classes")  # fmt: skip
    s.add_argument("--dim", type=_positive_int, default=None,
                   help="feature dimension d (default K; at most 4096)")  # fmt: skip
    s.add_argument("--loss", choices=("ce", "dr"), default="ce",
                   help="ce: cross-entropy; dr: dot-regression (needs --classifier etf)")  # fmt: skip
    s.add_argument("--classifier", choices=("learnable", "etf"), default="learnable",
                   help="learnable W, or W fixed to a simplex ETF")  # fmt: skip
    s.add_argument("--lam-w", type=_nonneg_float, default=None,
                   help="weight decay on W (default 0.25 sqrt(n_min)/N)")  # fmt: skip
    s.add_argument("--lam-h", type=_nonneg_float, default=None,
                   help="weight decay on H, summed over all N samples (default 0.25 sqrt(n_min)/N)")  # fmt: skip
    s.add_argument("--lam-b", type=_nonneg_float, default=0.0, help="weight decay on the bias")
    s.add_argument("--bias", action="store_true", help="learn a bias b (CE only)")
    s.add_argument("--feature-norm", type=_positive_float, default=None,
                   help="constrain features to this norm (default: free for CE, 1 for DR)")  # fmt: skip
    s.add_argument("--etf-scale", type=_positive_float, default=1.0,
                   help="length of the fixed ETF rows (> 0; default 1)")  # fmt: skip
    s.add_argument("--method", choices=("auto", "factored", "convex"), default="auto",
                   help="auto: the convex form for learnable CE, else factored L-BFGS")  # fmt: skip
    s.add_argument("--per-sample", action="store_true",
                   help="one feature per sample (a check of the per-class reduction; N <= 10000)")  # fmt: skip
    s.add_argument("--tail", default=None,
                   help="tail classes of the minority-collapse indices, e.g. 5,6,7,8,9 "
                        "(default: the few-shot classes, else the smallest third)")  # fmt: skip
    s.add_argument("--tol", type=_positive_float, default=None,
                   help="gradient-norm tolerance (default 1e-7 factored, 1e-10 convex)")  # fmt: skip
    s.add_argument("--seed", type=int, default=0, help="seed of the initial point and the ETF")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_solve)

    t = command("threshold", "measured vs theoretical minority-collapse threshold")
    t.add_argument("--ka", type=_positive_int, required=True, help="number of majority classes K_A")
    t.add_argument("--kb", type=_positive_int, required=True,
                   help="number of minority classes K_B (>= 2)")  # fmt: skip
    t.add_argument("--na", type=_positive_int, required=True, help="samples per majority class n_A")
    t.add_argument("--nb", type=_positive_int, required=True,
                   help="samples per minority class n_B < n_A")  # fmt: skip
    t.add_argument("--bias", action="store_true", help="learn a bias b")
    t.add_argument("--rel-tol", type=_positive_float, default=1e-3,
                   help="bisection stops when hi/lo - 1 < this (1e-12 .. 1; default 1e-3)")  # fmt: skip
    t.add_argument("--json", action="store_true", help="print JSON")
    t.set_defaults(func=_threshold)

    c = command("converge", "DR vs CE iterations and rates to an NC3 tolerance, fixed ETF")
    c.add_argument("--k", type=_positive_int, nargs="+", default=[10],
                   help="numbers of classes (default 10)")  # fmt: skip
    c.add_argument("--ratio", type=float, nargs="+", default=[1.0, 100.0],
                   help="imbalance ratios n_max/n_min >= 1 of the exponential profile "
                        "(default 1 100)")  # fmt: skip
    c.add_argument("--imbalance", nargs="*", default=None, help=argparse.SUPPRESS)
    c.add_argument("--dim", type=_positive_int, default=None, help="feature dimension (default K)")
    c.add_argument("--nc3-tol", type=_positive_float, default=1e-3,
                   help="NC3 tolerance that counts as converged (default 1e-3)")  # fmt: skip
    c.add_argument("--steps", default=None,
                   help="comma list of step sizes (default 0.1,1,10,100,1000,10000; best-step: "
                        "1 .. 1e6 in half decades)")  # fmt: skip
    c.add_argument("--max-iter", type=_positive_int, default=20000,
                   help="iterations per run, at most (default 20000)")  # fmt: skip
    c.add_argument("--param", choices=("projected", "normalised"), default="projected",
                   help="projected: h <- normalise(h - step g); normalised: descent on u, "
                        "h = u/||u||")  # fmt: skip
    c.add_argument("--protocol", choices=("same-step", "best-step"), default="same-step",
                   help="same-step: both losses at every step; best-step: each at its best")  # fmt: skip
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=_converge)

    f = command("phase", "PNG phase diagram of minority collapse over lam x n_A/n_B")
    f.add_argument("--ka", type=_positive_int, default=5, help="majority classes K_A (default 5)")
    f.add_argument("--kb", type=_positive_int, default=5,
                   help="minority classes K_B (>= 2; default 5)")  # fmt: skip
    f.add_argument("--nb", type=_positive_int, default=100,
                   help="samples per minority class n_B (default 100)")  # fmt: skip
    f.add_argument("--ratios", default=None,
                   help="n_A/n_B values > 1: list or lo:hi:num (default 1.25:50:17)")  # fmt: skip
    f.add_argument("--lams", default=None,
                   help="lam values > 0: list or lo:hi:num (default 1e-4:3e-2:33)")  # fmt: skip
    f.add_argument("--bias", action="store_true", help="learn a bias b")
    f.add_argument("--max-iter", type=_positive_int, default=50000,
                   help="iterations per convex solve; cells not settled by then are marked")  # fmt: skip
    f.add_argument("--out", default="ufm_phase.png", help="PNG path (default ufm_phase.png)")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=_phase)

    g = command("samples", "distance of the mean predictions from an ETF as n_B grows")
    g.add_argument("--ratio", type=float, default=10.0, help="n_A/n_B >= 1, fixed (default 10)")
    g.add_argument("--nb", default="10,100,1000,10000,100000,1000000",
                   help="comma list of n_B values (default 10 .. 1e6)")  # fmt: skip
    g.add_argument("--ka", type=_positive_int, default=5, help="majority classes K_A (default 5)")
    g.add_argument("--kb", type=_positive_int, default=5, help="minority classes K_B (default 5)")
    g.add_argument("--lam", type=_positive_float, default=1.0,
                   help="regularisation lam = 2 sqrt(lam_W lam_H) (default 1)")  # fmt: skip
    g.add_argument("--scaling", choices=("sum", "mean"), default="sum",
                   help="sum: --lam is the weight decay of the summed loss (lam/N is solved); "
                        "mean: --lam is used as is")  # fmt: skip
    g.add_argument("--bias", action="store_true", help="learn a bias b")
    g.add_argument("--json", action="store_true", help="print JSON")
    g.set_defaults(func=_samples)
