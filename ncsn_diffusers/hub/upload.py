"""Uploads to the Hugging Face Hub: a pipeline with its model card, and the allow-list of a finished run's folder."""

import json
import tempfile
from pathlib import Path

from huggingface_hub import create_repo, upload_folder

from .card_file import CARD_FILE
from .pipeline_card import PipelineCard, save_pipeline_with_card

# A single saved model (`save_pretrained` of a ModelMixin, --objective noise_classifier) and its card.
SINGLE_MODEL_FILES = ["config.json", "diffusion_pytorch_model.safetensors", CARD_FILE]


def push_pipeline(
    pipeline,
    repo_id: str,
    card: PipelineCard | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    safe_serialization: bool = True,
    variant: str | None = None,
) -> str:
    r"""
    Uploads `pipeline` and its filled-in model card to the Hub repo `repo_id` (created if needed), as
    [`save_pipeline_with_card`] writes them. (`pipeline.push_to_hub`, diffusers' own, uploads the repo's existing
    card or diffusers' generic one instead.)

    Args:
        pipeline ([`NCSNPipeline`]): the pipeline to upload.
        repo_id (`str`): the Hub repo, `user/name` or `name` (under the token's user).
        card ([`PipelineCard`], *optional*): what the card says of training, results, data sets and license.
        commit_message, private, token, create_pr, safe_serialization, variant:
            as in [`~diffusers.DiffusionPipeline.push_to_hub`].

    Returns:
        `str`: the URL of the commit.
    """
    repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmpdir:
        save_pipeline_with_card(
            pipeline, tmpdir, card, repo_id=repo_id, safe_serialization=safe_serialization, variant=variant
        )
        return pipeline._upload_folder(
            tmpdir, repo_id, token=token, commit_message=commit_message, create_pr=create_pr
        )


def push_folder(
    folder, repo_id: str, allow_patterns: list[str] | None = None, private: bool = False, token: str | None = None
) -> str:
    """Uploads `allow_patterns` (default: [`upload_patterns`]) of a finished run's `folder` to the Hub repo `repo_id`
    (created if needed) and returns the repo id.

    `token` is passed to the client only; without it, huggingface_hub uses HF_TOKEN or the cached login
    (`hf auth login`).
    """
    repo_id = create_repo(repo_id, exist_ok=True, private=private, token=token).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message="Training run of train_ncsn.py",
        allow_patterns=allow_patterns or upload_patterns(Path(folder)),
        token=token,
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
    return ["model_index.json", CARD_FILE, "samples/step_[0-9][0-9][0-9][0-9][0-9][0-9].png"] + [
        f"{name}/*" for name in components
    ]
