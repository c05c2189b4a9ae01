import os

# No test may reach the Hub: without these every lookup retries for ~23 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

# Small tensors on 2 shared cores: one thread is many times faster than the default pool.
torch.set_num_threads(1)
