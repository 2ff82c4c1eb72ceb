"""The small synchronous-Hyperband study of the tuning fault scenarios, shared by the tests and by
the driver process that ``test_tuning_faults.py`` SIGKILLs mid-study.

``python tests/reliability/tuning_driver.py STORE_DIR [NUM_CPUS]`` runs the study on its own local Ray
(2 CPUs unless given, 127.0.0.1) with results and checkpoints under ``STORE_DIR`` (a local store). The test starts
it in a new session, so that the driver leads the process group of every Ray process it starts.

max_t=3, eta=3, 4 samples: Ray's bracket s=0 takes 2 trials to 3 epochs; bracket s=1 starts the
other 2 at 1 epoch and keeps ceil(2/3)=1 of them (3 trials complete, 1 is stopped, 10 epochs).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from tasks.models.config import ModelConfig, TrainingConfig  # noqa: E402
from tasks.store.config import StoreConfig  # noqa: E402
from tasks.tuning.config import TuningConfig  # noqa: E402

SEED = 11
SPACE = {
    "lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2},
    "width": {"type": "choice", "values": [16, 32]},
    "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
}
MODEL = ModelConfig(arch="mlp", depth=1)
TRAINING = TrainingConfig(num_threads=1)
NUM_SAMPLES = 4
MAX_T = 3


def study_config() -> TuningConfig:
    """Synchronous Hyperband (HyperBandScheduler), 1 CPU per trial, 2 retries per trial."""
    return TuningConfig(
        scheduler="hyperband",
        max_t=MAX_T,
        eta=3,
        num_samples=NUM_SAMPLES,
        search_space=SPACE,
        max_failures=2,
        resources_per_trial={"cpu": 1, "gpu": 0},
        # a checkpoint every epoch (not only where Hyperband may pause): the
        # fault scenarios count them and resume mid-rung from them
        checkpoint_every=1,
    )


def study_splits():
    """Digits with 900 training samples: epochs long enough for the driver kill to land mid-study."""
    from tasks.data.sources import load_digits_dataset, split_dataset

    return split_dataset(load_digits_dataset(), seed=5, val_fraction=0.2, test_fraction=0.2, max_train_samples=900)


def experiment_dir(store_dir: str | Path, splits) -> Path:
    """Where Tune keeps the study's results, checkpoints and experiment state in a local store."""
    from tasks.data.dataset import fingerprint
    from tasks.tuning.search import study_name_for

    cfg = study_config()
    name = study_name_for(cfg, SEED, MODEL, TRAINING, fingerprint(splits.train))
    return Path(store_dir).resolve() / cfg.storage_subpath / name


def run(store_dir: str | Path, splits=None, **kwargs):
    """Run (or resume) the study on a local store; ``kwargs`` go to ``run_study`` (fault hooks)."""
    from tasks.tuning.search import run_study

    return run_study(
        study_config(),
        splits if splits is not None else study_splits(),
        seed=SEED,
        store=StoreConfig(uri=str(store_dir)),
        model=MODEL,
        training=TRAINING,
        **kwargs,
    )


def main(argv: list[str]) -> int:
    import ray

    if len(argv) not in (1, 2):
        print("usage: tuning_driver.py STORE_DIR [NUM_CPUS]", file=sys.stderr)
        return 2
    from tasks.ray_security import enable_token_auth

    enable_token_auth()  # as connect_ray does: Ray Tune runs under token authentication
    # NUM_CPUS 1: one trial at a time, so the study's trials end one by one (the driver-kill test
    # needs a snapshot with some trials finished and some not; Hyperband's decisions do not depend on it).
    ray.init(num_cpus=int(argv[1]) if len(argv) == 2 else 2, include_dashboard=False, log_to_driver=False)
    try:
        study = run(argv[0])
        print(f"finished {study.study_name}: best {study.best_params}", flush=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
