"""`imgclf tune`: a KerasTuner search over config keys; every trial is a normal training run.

The config's ``tune.space`` maps config keys to choices or ranges. A KerasTuner HyperModel
declares one hyperparameter per key (named by the key); our Tuner's ``run_trial`` sets the
trial's values on the config and calls the trainer, as ``imgclf train`` would, into
``TUNE_DIR/trials/``, and returns the objective read from the run's history.csv at the
epoch whose weights the run kept (train.early_stopping.monitor picks it), so a trial's score
is that of its model.keras. A trial that fails (a diverged loss, any error) is recorded as
failed with its reason and the search goes on.

    TUNE_DIR/config.yaml        the resolved config, tune section included
    TUNE_DIR/tune.json          manifest: status, mode (local or chief), algorithm, objective, best trial
    TUNE_DIR/keras_tuner/       KerasTuner's oracle and trial state (what --resume reloads)
    TUNE_DIR/trials/            one run directory per trial execution, and trial_<id>.json
    TUNE_DIR/trials.csv         one row per ended trial
    TUNE_DIR/best_config.yaml   the best trial's config, tune section dropped
    TUNE_DIR/tune.png           the objective per trial and per tuned key

The rooms: space (the space <-> KerasTuner's hyperparameters), trials (a trial's config, runs,
score and record), tuner (KerasTuner's oracle and tuner), results (trials.csv, best_config.yaml,
tune.png), search (checks, the tune directory, the search in one process), distributed (the
chief and its workers).
"""

from imgclf.tuning.distributed import chief, worker
from imgclf.tuning.results import summarize
from imgclf.tuning.search import resume, tune

__all__ = ["chief", "resume", "summarize", "tune", "worker"]
