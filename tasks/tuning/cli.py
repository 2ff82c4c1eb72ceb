"""Text and JSON rendering of the Hyperband bracket plan for ``driftloop hyperband-plan``.

Pure (no prefect, no Ray import): ``flows/cli/tuning.py`` mounts :func:`format_plan`.
"""

from __future__ import annotations

import json

from tasks.tuning.plan import Plan, hyperband_plan, ray_hyperband_plan

TABLE1_NOTE = (
    "The counts follow Algorithm 1 of Li et al., JMLR 2018 (n = ceil(B/R * eta^s / (s+1)), "
    "n_i = floor(n * eta^-i), r_i = R * eta^(i-s)). For R=81, eta=3 that gives first rungs of "
    "81/34/15/8/5 configurations; the paper's Table 1 prints 81/27/9/6/5 instead. This code "
    "follows Algorithm 1, not Table 1."
)
RAY_NOTE = (
    "Ray Tune's HyperBandScheduler (what the tune stage runs) differs: s_max = round(log_eta R) "
    "(not floor), bracket s starts ceil((s_max+1)/(s+1) * eta^s) trials at int(R * eta^-s) epochs, "
    "each halving keeps ceil(n/eta) survivors (Algorithm 1 keeps floor), brackets are filled "
    "s = 0 first, and promoted trials resume from their checkpoints, so they train only the extra "
    "epochs ('resumed' totals)."
)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def _table(plan: Plan) -> list[str]:
    lines = [f"{'s':>3} {'i':>3} {'n_i':>6} {'r_i':>8} {'n_i*r_i':>9}   bracket epochs (resumed)"]
    for b in plan.brackets:
        for r in b.rungs:
            tail = f"   {_num(b.total_epochs)} ({_num(b.resumed_epochs)})" if r.i == 0 else ""
            lines.append(f"{b.s:>3} {r.i:>3} {r.n:>6} {_num(r.r):>8} {_num(r.n * r.r):>9}{tail}")
    lines.append(
        f"total: {plan.num_configurations} configurations, {_num(plan.total_epochs)} epochs "
        f"({_num(plan.resumed_epochs)} when promoted configurations resume)"
    )
    return lines


def format_plan(max_t: int, eta: int, as_json: bool = False) -> str:
    """The Hyperband bracket plan for R=``max_t`` epochs and reduction factor ``eta``.

    Shows Algorithm 1's plan (what the paper's algorithm computes, and what the numbers here
    follow), then the plan of Ray Tune's HyperBandScheduler, with notes on how they differ.
    Raises :class:`tasks.errors.ConfigError` for max_t < eta or eta < 2.
    """
    alg = hyperband_plan(max_t, eta)
    ray = ray_hyperband_plan(max_t, eta)
    if as_json:
        return json.dumps(
            {
                "max_t": max_t,
                "eta": eta,
                "follows": "algorithm_1",
                "first_rung_sizes": [b.rungs[0].n for b in alg.brackets],
                "algorithm_1": alg.as_dict(),
                "ray_hyperband": ray.as_dict(),
                "notes": [TABLE1_NOTE, RAY_NOTE],
            },
            indent=2,
        )
    first = "/".join(str(b.rungs[0].n) for b in alg.brackets)
    out = [
        f"Hyperband plan for R={max_t} epochs, eta={eta}: s_max={alg.s_max}, "
        f"B=(s_max+1)R={_num(alg.budget_per_bracket)}",
        f"First-rung sizes (Algorithm 1): {first}",
        "",
        f"== {alg.source}, brackets s = {alg.s_max}..0 ==",
    ]
    out += _table(alg)
    out += ["", f"== {ray.source}, brackets in fill order s = 0..{ray.s_max}; r_i is the cumulative milestone =="]
    out += _table(ray)
    out += ["", "Notes:", "- " + TABLE1_NOTE, "- " + RAY_NOTE]
    return "\n".join(out)
