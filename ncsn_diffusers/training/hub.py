"""The Hugging Face Hub for training: a quick reachability probe, and the upload of a finished run."""

import json
from pathlib import Path


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


# A single saved model (`save_pretrained` of a ModelMixin, --objective noise_classifier) and its card.
SINGLE_MODEL_FILES = ["config.json", "diffusion_pytorch_model.safetensors", "README.md"]


def push_to_hub(args, repo_id: str, allow_patterns: list[str] | None = None) -> str:
    """Uploads `allow_patterns` (default: [`upload_patterns`]) from --output_dir to the Hub repo `repo_id`.

    `--hub_token` is passed to the client only; without it, huggingface_hub uses HF_TOKEN or the cached login
    (`hf auth login`).
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
        allow_patterns=allow_patterns or upload_patterns(Path(args.output_dir)),
        token=args.hub_token,
    )
    return repo_id


def upload_patterns(output_dir: Path) -> list[str]:
    """What a push uploads, and nothing else: model_index.json, the folder of every component it names (unet/,
    scheduler/, ...), the model card and the sample grids `samples/step_<step>.png` (a single saved model: its
    config.json, weights and card). Logs (any --logging_dir),
    training_args.json, checkpoints and the lock file hold local paths or are of no use on the Hub: never uploaded."""
    if not (output_dir / "model_index.json").is_file():  # a single model (--objective noise_classifier)
        return SINGLE_MODEL_FILES
    index = json.loads((output_dir / "model_index.json").read_text())
    components = [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)]
    return ["model_index.json", "README.md", "samples/step_[0-9][0-9][0-9][0-9][0-9][0-9].png"] + [
        f"{name}/*" for name in components
    ]
