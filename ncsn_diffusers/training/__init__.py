"""Training score networks: `train(TrainingConfig(...))` is what `train_ncsn.py`, the tests and the examples call.

One idea per module: `config` (the settings and their one `resolve()`), `derived_settings` (the defaults that depend
on other settings, and the combinations refused), `flag_ranges`, `objectives/` (one file per objective: its noise-
level distribution, its loss and what it trains and saves; `OBJECTIVES` names them), `data` (the training set and
each step's batch), `batch_order` (the (seed, step) randomness), `images` (decoding), `image_dataset` (a folder or
`datasets` set, one image per item), `streaming` (the DataLoader in the batch order), `networks` (the model and its
noise scheduler), `checkpointing`, `run_settings` (what a resume must match), `run_dir` (the output folder's rules
and lock), `json_log`, `sampler` (the sampler saved with the model), `export` (a score network saved as a pipeline),
`finish` (the end of every run: EMA weights, save, push; cards and uploads are `ncsn_diffusers.hub`'s), `command_line` (the parser made from the config)
and `loop` (`train`); `--objective consistency_distillation` in `distillation_config` (its flags and teacher
checks), `objectives/consistency_distillation` (the objective and its export) and `distillation_record`, the algorithm
in `consistency_distillation`.
"""

from .checkpointing import resume_hint
from .config import TrainingConfig
from .loop import train

__all__ = ["TrainingConfig", "resume_hint", "train"]
