"""Every private API of a pinned dependency that driftloop relies on, declared in one place.

A few fixes need more than the public API: Ray Tune 2.55.1's Hyperband loses its bracket
bookkeeping on pause, retry and restore (``tasks.tuning.ray_hooks``); a callback added to one
``fit`` only goes through the Tuner's internals (``tasks.tuning.study``); alibi-detect 0.13.0's
online detectors grow their history without bound and re-draw their calibration on every rebuild
(``tasks.drift.detectors``). Each such use is listed in :data:`PRIVATE_APIS` with the version it was
written against (:data:`PINNED`, the same as ``pyproject.toml``).

:func:`require` is called where the patched code runs (a study, a detector). It fails loudly, with
a :class:`CompatError` naming the package, the pinned and installed versions and each attribute that
is gone, when the installed version is not the pinned one and the private names moved; an upgrade
that keeps them passes with a warning. ``tests/test_compat.py`` checks every entry against what is
installed, so an upgrade that breaks one fails the suite before any study does.

Nothing here imports a dependency at module import time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import warnings
from dataclasses import dataclass

from tasks.errors import DriftloopError

# The versions the private uses below were written against (pyproject.toml pins the same).
PINNED: dict[str, str] = {"ray": "2.55.1", "alibi-detect": "0.13.0"}


@dataclass(frozen=True)
class PrivateUse:
    """``names`` (attributes, methods, or ``self.<name>`` in the class's source) of
    ``target`` (``module:Class`` or ``module``) that ``used_by`` depends on."""

    dist: str
    target: str
    names: tuple[str, ...]
    used_by: str


PRIVATE_APIS: tuple[PrivateUse, ...] = (
    PrivateUse(
        "ray",
        "ray.tune.schedulers.hyperband:_Bracket",
        ("_all_trials", "_live_trials", "_halves", "_cumul_r", "_r", "_n", "_n0", "cleanup_full"),
        "tasks.tuning.ray_hooks (a restored or retried trial keeps its bracket)",
    ),
    PrivateUse(
        "ray",
        "ray.tune.schedulers.hyperband:HyperBandScheduler",
        (
            "_hyperbands",
            "_trial_info",
            "_state",
            "_create_bracket",
            "_get_r0",
            "_get_n0",
            "_time_attr",
            "_eta",
            "_metric",
            "_metric_op",
            "_stop_last_trials",
            "_max_t_attr",
            "_num_stopped",
            "_process_bracket",
            "_unpause_trial",
        ),
        "tasks.tuning.ray_hooks (BracketTaggingHyperBand; _process_bracket is a copy of Ray 2.55.1's)",
    ),
    PrivateUse(
        "ray",
        "ray.tune.execution.tune_controller:TuneController",
        ("_mark_trial_to_checkpoint",),
        "tasks.tuning.ray_hooks (a trial stopped while paused is saved as stopped)",
    ),
    PrivateUse("ray", "ray.tune.tuner:Tuner", ("_local_tuner",), "tasks.tuning.study (callbacks for one fit only)"),
    PrivateUse(
        "ray",
        "ray.tune.impl.tuner_internal:TunerInternal",
        ("_run_config",),
        "tasks.tuning.study (callbacks for one fit only)",
    ),
    PrivateUse(
        "ray",
        "ray.tune.result_grid:ResultGrid",
        ("_experiment_analysis",),
        "tasks.tuning.study (trials in the order Tune ran them)",
    ),
    PrivateUse(
        "ray",
        "ray.tune.experiment.trial:_TemporaryTrialState",
        ("ray_actor",),
        "tasks.tuning.callbacks (StallGuard stops a silent trial's actor)",
    ),
    PrivateUse(
        "ray",
        "ray._raylet",
        ("AuthenticationMode", "get_authentication_mode"),
        "tasks.ray_security (whether this process runs with token authentication)",
    ),
    PrivateUse(
        "alibi-detect",
        "alibi_detect.cd.mmd:MMDDrift",
        ("_detector",),
        "tasks.drift.detectors (the permutation count in the report)",
    ),
    PrivateUse(
        "alibi-detect",
        "alibi_detect.cd.cvm_online:CVMDriftOnline",
        ("_check_drift", "_configure_thresholds", "xs", "max_ws", "t", "get_threshold"),
        "tasks.drift.detectors (stored thresholds, a bounded history)",
    ),
    PrivateUse(
        "alibi-detect",
        "alibi_detect.cd.pytorch.mmd_online:MMDDriftOnlineTorch",
        (
            "_configure_thresholds",
            "_configure_ref_subset",
            "_initialise_state",
            "k_xx",
            "ref_inds",
            "init_test_inds",
            "get_threshold",
        ),
        "tasks.drift.detectors (stored thresholds and reference split)",
    ),
)


class CompatError(DriftloopError):
    """An installed dependency no longer has a private name driftloop relies on."""


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_names(use: PrivateUse) -> list[str]:
    """The names of ``use`` the installed package lacks ([] when all are there; every name when the
    target itself cannot be imported)."""
    module_name, _, cls_name = use.target.partition(":")
    try:
        obj = importlib.import_module(module_name)
        if cls_name:
            obj = getattr(obj, cls_name)
    except (ImportError, AttributeError):
        return list(use.names)
    source = ""
    if inspect.isclass(obj):
        try:
            source = "\n".join(
                inspect.getsource(k) for k in obj.__mro__ if k.__module__.split(".")[0] == module_name.split(".")[0]
            )
        except (OSError, TypeError):
            source = ""
    gone = []
    for name in use.names:
        if hasattr(obj, name) or re.search(rf"\bself\.{re.escape(name)}\b", source):
            continue
        gone.append(name)
    return gone


def require(dist: str, installed: str | None = None) -> None:
    """Check ``dist``'s private uses before the code that relies on them runs.

    The pinned version passes at once. Another version passes with a warning when every private
    name is still there, and raises :class:`CompatError` (what is gone, who needs it, the pin to
    install) when one is not. ``installed`` overrides the detected version (tests)."""
    pinned = PINNED[dist]
    installed = installed if installed is not None else installed_version(dist)
    if installed == pinned:
        return
    gone = {u.target: (missing_names(u), u.used_by) for u in PRIVATE_APIS if u.dist == dist}
    broken = {t: v for t, v in gone.items() if v[0]}
    if broken:
        lines = "; ".join(f"{t}: {', '.join(names)} (used by {who})" for t, (names, who) in broken.items())
        raise CompatError(
            f"{dist} {installed} is installed, driftloop is written against {dist}=={pinned}, and "
            f"private names it relies on are gone: {lines}. Install {dist}=={pinned} "
            "(pyproject.toml) or update tasks/compat.py and the modules named"
        )
    warnings.warn(
        f"{dist} {installed} is installed, driftloop is tested with {dist}=={pinned}; the private names "
        "it relies on are still there (tasks/compat.py)",
        RuntimeWarning,
        stacklevel=2,
    )
