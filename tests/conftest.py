import atexit
import os
import shutil
import tempfile

# The suite must give the same answer on a fresh machine as on a developer's: nothing may be read from this user's
# caches or settings. Before any import reads them, point every cache at a folder of this run's own (accelerate's
# `default_config.yaml` lives under HF_HOME) and drop the variables through which a user configures accelerate or the
# Hub (a developer's `ACCELERATE_MIXED_PRECISION=fp16` would change every in-process training test).
_home = tempfile.mkdtemp(prefix="ncsn-diffusers-tests-")
atexit.register(shutil.rmtree, _home, ignore_errors=True)
for name in list(os.environ):
    if name.startswith(("ACCELERATE_", "HF_", "HUGGINGFACE_", "WANDB_")) or name in ("XDG_CACHE_HOME",):
        del os.environ[name]
os.environ.update(
    HF_HOME=os.path.join(_home, "huggingface"),
    NCSN_DIFFUSERS_CACHE=os.path.join(_home, "ncsn_diffusers"),
    # No test may reach the Hub: without these every lookup retries for ~23 s before failing.
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
)

import torch  # noqa: E402

# Small tensors on 2 shared cores: one thread is many times faster than the default pool.
torch.set_num_threads(1)
