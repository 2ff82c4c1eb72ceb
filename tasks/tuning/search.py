"""Hyperparameter search on Ray Tune: synchronous Hyperband by default (Li et al., JMLR 2018),
ASHA or BOHB by configuration.

This module only gathers the public names of the tuning package; the code lives along its seams:

* ``tasks.tuning.space``: the search space (validation, sampling, param_space, apply_params)
* ``tasks.tuning.trainable``: the Ray Tune trainable around the plain train/evaluate functions
* ``tasks.tuning.runtime``: storage, connecting to Ray, trial resources, the scheduler
* ``tasks.tuning.study``: ``run_study`` and turning Tune's results into a StudyResult
* ``tasks.tuning.results``: TrialRecord, StudyResult, StudyInterrupted
"""

from tasks.tuning.config import MODEL_PARAMS, SPACE_TYPES, TRAINING_PARAMS  # noqa: F401
from tasks.tuning.results import StudyInterrupted, StudyResult, TrialRecord, asha_milestones, rung_milestones  # noqa: F401
from tasks.tuning.runtime import check_ray_address, connect_ray, s3_filesystem, trial_resources, tune_storage  # noqa: F401
from tasks.tuning.space import (  # noqa: F401
    METRICS,
    SCHEDULERS,
    apply_best_config,
    apply_params,
    bohb_missing_packages,
    config_key,
    param_space,
    parse_search_space,
    sample_config,
    trial_seed,
    validate_search_space,
    validate_tuning,
)
from tasks.tuning.study import run_study, study_name_for  # noqa: F401
from tasks.tuning.trainable import META_FILE, STATE_FILE, InjectedCrash, TrialSetup, train_trial  # noqa: F401
