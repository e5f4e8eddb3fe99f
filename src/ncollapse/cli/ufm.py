"""``ncollapse ufm solve | threshold | converge | phase``: the unconstrained feature model.

Argument parsing only; the work is in :mod:`ncollapse.ufm`.
"""

from __future__ import annotations

import argparse
import json
import math

from ..errors import UserError


def _print(obj, as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, default=_jsonable))
    else:
        print("\n".join(lines))


def _jsonable(x):
    try:
        import numpy as np

        if isinstance(x, np.ndarray):
            return x.tolist()
        if isinstance(x, np.generic):
            return x.item()
    except ImportError:  # pragma: no cover
        pass
    return str(x)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _solve(args: argparse.Namespace) -> int:
    from ..ufm import solve

    sol = solve(
        args.counts,
        dim=args.dim,
        loss=args.loss,
        classifier=args.classifier,
        lam_w=args.lam_w,
        lam_h=args.lam_h,
        lam_b=args.lam_b,
        bias=args.bias,
        feature_norm=args.feature_norm,
        etf_scale=args.etf_scale,
        method=args.method,
        per_sample=args.per_sample,
        tol=args.tol,
        seed=args.seed,
    )
    d = sol.to_dict()
    m = sol.metrics
    keys = ("nc1", "nc2_etf_error", "w_etf_error", "nc3", "nc4", "minority_collapse_w",
            "minority_collapse_means", "minority_spread")  # fmt: skip
    lines = [
        f"UFM {sol.settings['loss']} / {sol.settings['classifier']} classifier, "
        f"K={len(sol.counts)}, N={sum(sol.counts)}, d={sol.settings['dim']}, "
        f"lam={sol.settings['lam']:.4g} (= 2 sqrt(lam_W lam_H)), method {sol.method}",
        f"objective {sol.objective:.8g}  loss {sol.loss:.6g}  iterations {sol.iterations}  "
        f"converged {sol.converged} (grad norm {sol.grad_norm:.2e})  {sol.seconds:.2f} s",
        *(f"  {k:24s} {_fmt(m.get(k))}" for k in keys if k in m),
    ]
    _print(d, args.json, lines)
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
    from ..ufm import DEFAULT_STEPS, converge

    steps = DEFAULT_STEPS if args.steps is None else [float(s) for s in args.steps.split(",")]
    rows = []
    for k in args.k:
        for imb in args.imbalance:
            rows.append(
                converge(
                    k,
                    imb,
                    dim=args.dim,
                    nc3_tol=args.nc3_tol,
                    steps=steps,
                    max_iter=args.max_iter,
                    param=args.param,
                )
            )
    lines = [f"iterations to NC3 < {args.nc3_tol:g}, fixed ETF, unit features ({args.param} GD)"]
    lines.append(
        f"{'K':>4} {'imb':>5} {'DR it':>7} {'DR step':>9} {'CE it':>7} {'CE step':>9} {'CE/DR':>6}"
    )
    for r in rows:
        lines.append(
            f"{r['num_classes']:>4} {r['imbalance']:>5g} {_fmt(r['dr']['iterations']):>7} "
            f"{_fmt(r['dr']['step']):>9} {_fmt(r['ce']['iterations']):>7} "
            f"{_fmt(r['ce']['step']):>9} {_fmt(r['ratio_ce_over_dr']):>6}"
        )
    _print(rows if len(rows) > 1 else rows[0], args.json, lines)
    return 0


def _floats(text: str, name: str) -> list[float]:
    try:
        if ":" in text:  # lo:hi:num, log-spaced
            lo, hi, num = text.split(":")
            lo, hi, n = float(lo), float(hi), int(num)
            if lo <= 0 or hi <= lo or n < 2:
                raise ValueError
            return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(
            f"bad {name} {text!r}: give a comma list (0.001,0.003) or lo:hi:num (log-spaced)"
        ) from None


def _phase(args: argparse.Namespace) -> int:
    from ..ufm import phase_diagram

    ratios = None if args.ratios is None else _floats(args.ratios, "--ratios")
    lams = None if args.lams is None else _floats(args.lams, "--lams")
    r = phase_diagram(args.ka, args.kb, args.nb, ratios=ratios, lams=lams, bias=args.bias,
                      out=args.out)  # fmt: skip
    lines = [f"phase diagram ({len(r['ratios'])} ratios x {len(r['lams'])} lams, "
             f"{r['seconds']:.1f} s) written to {r['png']}"]  # fmt: skip
    _print(r, args.json, lines)
    return 0


def _nonneg(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}")
    return v


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "ufm",
        help="unconstrained feature model: solve, minority-collapse threshold, DR vs CE, phase",
        description="Simulate the unconstrained feature model (SPEC section 7); see docs/ufm.md.",
    )
    sub = p.add_subparsers(dest="ufm_command", metavar="UFM_COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    s = sub.add_parser("solve", help="solve one UFM and print its neural-collapse metrics")
    s.add_argument("--counts", required=True, help="class counts, e.g. 500x5,100x5 or 500,100,100")
    s.add_argument("--dim", type=int, default=None, help="feature dimension (default K)")
    s.add_argument("--loss", choices=("ce", "dr"), default="ce")
    s.add_argument("--classifier", choices=("learnable", "etf"), default="learnable")
    s.add_argument("--lam-w", type=float, default=None,
                   help="weight decay on W (default 0.25 sqrt(n_min)/N)")  # fmt: skip
    s.add_argument("--lam-h", type=float, default=None,
                   help="weight decay on H (default 0.25 sqrt(n_min)/N)")  # fmt: skip
    s.add_argument("--lam-b", type=float, default=0.0, help="weight decay on the bias")
    s.add_argument("--bias", action="store_true", help="learn a bias b")
    s.add_argument("--feature-norm", type=float, default=None,
                   help="constrain features to this norm (default: free for CE, 1 for DR)")  # fmt: skip
    s.add_argument("--etf-scale", type=float, default=1.0, help="scale of the fixed ETF rows")
    s.add_argument("--method", choices=("auto", "factored", "convex"), default="auto",
                   help="auto: the convex form for learnable CE, else factored L-BFGS")  # fmt: skip
    s.add_argument("--per-sample", action="store_true",
                   help="solve with one feature per sample (check of the per-class reduction)")  # fmt: skip
    s.add_argument("--tol", type=float, default=None, help="gradient-norm tolerance")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_solve)

    t = sub.add_parser("threshold", help="measured vs theoretical minority-collapse threshold")
    t.add_argument("--ka", type=int, required=True, help="number of majority classes K_A")
    t.add_argument("--kb", type=int, required=True, help="number of minority classes K_B")
    t.add_argument("--na", type=int, required=True, help="samples per majority class n_A")
    t.add_argument("--nb", type=int, required=True, help="samples per minority class n_B < n_A")
    t.add_argument("--bias", action="store_true")
    t.add_argument("--rel-tol", type=float, default=1e-3, help="bisection stops at hi/lo-1 < this")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_threshold)

    c = sub.add_parser("converge", help="DR vs CE iterations to an NC3 tolerance, fixed ETF")
    c.add_argument("--k", type=int, nargs="+", default=[10], help="numbers of classes")
    c.add_argument("--imbalance", type=float, nargs="+", default=[1.0, 100.0])
    c.add_argument("--dim", type=int, default=None)
    c.add_argument("--nc3-tol", type=float, default=1e-3)
    c.add_argument("--steps", default=None, help="comma list of step sizes (default 1..1e6)")
    c.add_argument("--max-iter", type=int, default=20000)
    c.add_argument("--param", choices=("projected", "normalised"), default="projected")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_converge)

    f = sub.add_parser("phase", help="PNG phase diagram of minority collapse over lam x n_A/n_B")
    f.add_argument("--ka", type=int, default=5)
    f.add_argument("--kb", type=int, default=5)
    f.add_argument("--nb", type=int, default=100)
    f.add_argument("--ratios", default=None, help="n_A/n_B values: list or lo:hi:num")
    f.add_argument("--lams", default=None, help="lam values: list or lo:hi:num")
    f.add_argument("--bias", action="store_true")
    f.add_argument("--out", default="ufm_phase.png", help="PNG path (default ufm_phase.png)")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_phase)
