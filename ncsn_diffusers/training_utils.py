"""The names `ncsn_diffusers.training_utils` held before the `training/` package; import them from there instead.

Checkpoints: `training.checkpointing`; the run settings a resume compares: `training.run_settings`; the lock and the output folder's rules:
`training.run_dir`; what a run owns elsewhere: `training.log_dir`; image decoding: `training.images`; the Hub probe: `training.hub`; the batch order:
`training.batch_order`.
"""

from .training.batch_order import BatchOrder, derived_seed, num_update_steps  # noqa: F401
from .training.checkpointing import (  # noqa: F401
    ABANDONED_PREFIX,
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    CHECKPOINT_PATTERN,
    STATE_FILE,
    TMP_SUFFIX,
    CheckpointDamagedError,
    abandon_later_checkpoints,
    complete_checkpoints,
    decode_state,
    discard_checkpoint,
    encode_state,
    foreign_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    read_training_state,
    remove_checkpoint_files,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .training.hub import hub_endpoint, hub_reachable  # noqa: F401
from .training.images import (  # noqa: F401
    IMAGE_EXTENSIONS,
    decode_images,
    hub_dataset_sources,
    image_folder_sources,
    preprocess_image,
)
from .training.log_dir import (  # noqa: F401
    LOG_CLAIM_FILE,
    LOG_FILE,
    LOG_FILES,
    SAMPLE_GRID,
    TRACKER_PROJECT,
    check_logging_dir,
    claim_logging_dir,
    owned_files,
    remove_owned_files,
    run_logging_dir,
)
from .training.loop import end_distributed_run  # noqa: F401
from .training.run_dir import LOCK_FILE, OutputDirLock  # noqa: F401
from .training.run_settings import compare_run_settings  # noqa: F401
