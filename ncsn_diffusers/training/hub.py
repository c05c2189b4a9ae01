"""The Hugging Face Hub for training: a quick reachability probe, and the upload of a finished run."""

from .checkpointing import ABANDONED_PREFIX
from .run_dir import LOCK_FILE


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout` seconds (no retries)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def push_to_hub(args, repo_id: str) -> str:
    """Uploads --output_dir (pipeline, model card, sample grids) to the Hub repo `repo_id`.

    Checkpoints, logs and training_args.json (local paths) stay local. `--hub_token` is passed to the client only;
    without it, huggingface_hub uses the cached login (`hf auth login`) or HF_TOKEN.
    """
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(
        repo_id,
        exist_ok=True,
        private=args.hub_private_repo,
        token=args.hub_token,
    ).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=args.output_dir,
        commit_message="Training run of train_ncsn.py",
        ignore_patterns=[
            "checkpoint-*",
            f"{ABANDONED_PREFIX}*",
            "*.tmp*",
            "logs/**",
            "training_args.json",
            LOCK_FILE,
        ],
        token=args.hub_token,
    )
    return repo_id
