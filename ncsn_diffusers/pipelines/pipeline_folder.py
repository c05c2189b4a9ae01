"""A saved pipeline's folder: a local one as it is, or a Hub repo id fetched whole, checked to hold unet/ and
scheduler/."""

import json
import os
from pathlib import Path

from huggingface_hub import snapshot_download

HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")


def resolve_pipeline_folder(pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs) -> str:
    """
    Returns a local folder holding a saved pipeline: the folder itself, or a snapshot of a Hub repo id. Pass the
    result to any pipeline's `from_pretrained`, e.g. `DDPMPipeline.from_pretrained(resolve_pipeline_folder(repo_id))`
    for a DDPM pipeline whose scheduler is an `AnnealedLangevinScheduler`.
    """
    path = Path(pretrained_model_name_or_path)
    if not path.is_dir():
        if path.exists() or str(pretrained_model_name_or_path).count("/") > 1:
            raise ValueError(f"{pretrained_model_name_or_path} is neither a pipeline folder nor a Hub repo id.")
        path = Path(snapshot_download(str(pretrained_model_name_or_path), **hub_kwargs))
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{pretrained_model_name_or_path} is not a saved pipeline: model_index.json is missing. Save one with "
            "pipe.save_pretrained(folder), or load a lone U-Net with NCSNUNet2DModel.from_pretrained(folder)."
        )
    components = json.loads(index.read_text())
    missing = [name for name in ("unet", "scheduler") if name not in components or not (path / name).is_dir()]
    if missing:
        raise ValueError(
            f"{pretrained_model_name_or_path} is not an NCSN pipeline: it lacks {', '.join(missing)} "
            "(model_index.json entry and folder). An NCSN pipeline holds unet/ and scheduler/."
        )
    return str(path)
