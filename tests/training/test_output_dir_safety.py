"""What --overwrite_output_dir may touch: never a file outside --output_dir reached through a symbolic link, and
every file of the previous run's saved model, so that nothing of it is left beside (or pushed with) this run's."""

import os

import pytest
from test_train_ncsn import TINY, run_main, tree_state
from test_train_noise_classifier import TINY as CLASSIFIER
from test_train_noise_classifier import score_pipeline

from ncsn_diffusers.hub import upload_patterns


@pytest.mark.parametrize("link", ["unet", "README.md", "samples", "training_args.json", ".train_ncsn.lock"])
def test_overwrite_never_writes_through_a_symlink_out_of_the_folder(link, tmp_path):
    """Bug caught: --overwrite_output_dir saved the U-Net, the card, grids, the arguments or the lock through a
    symbolic link in --output_dir, overwriting the user's files it points to."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "folder").mkdir(parents=True)
    (elsewhere / "file.txt").write_text("the user's")
    (elsewhere / "folder" / "config.json").write_text("the user's")
    out = score_pipeline(tmp_path / "out")
    target = elsewhere / ("folder" if link in ("unet", "samples") else "file.txt")
    if (out / link).is_dir():
        for path in sorted((out / link).iterdir()):
            path.unlink()
        (out / link).rmdir()
    (out / link).unlink(missing_ok=True)
    (out / link).symlink_to(target, target_is_directory=target.is_dir())
    before = tree_state(elsewhere), tree_state(out)
    with pytest.raises(ValueError, match=rf"symbolic links where this run writes \({link} -> "):
        run_main(*TINY, "--max_train_steps", "1", "--output_dir", out, "--overwrite_output_dir")
    assert (tree_state(elsewhere), tree_state(out)) == before


def test_overwrite_with_another_objective_leaves_nothing_of_the_previous_model(tmp_path):
    """Bug caught: --objective noise_classifier --overwrite_output_dir over a saved score pipeline left its
    model_index.json, unet/ and scheduler/ beside the classifier, and the push's allow-list (read from
    model_index.json) uploaded the old score model under the classifier's card."""
    out = score_pipeline(tmp_path / "out")
    (out / "unet" / "notes.txt").write_text("the user's")  # not the model's: kept
    run_main(*CLASSIFIER, "--max_train_steps", "1", "--output_dir", out, "--overwrite_output_dir")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "config.json", "diffusion_pytorch_model.safetensors", "logs", "training_args.json", "unet"]
    )
    assert os.listdir(out / "unet") == ["notes.txt"]
    assert upload_patterns(out) == ["config.json", "diffusion_pytorch_model.safetensors", "README.md"]

    run_main(*TINY, "--max_train_steps", "1", "--output_dir", out, "--overwrite_output_dir")  # and back
    assert not (out / "config.json").exists() and not (out / "diffusion_pytorch_model.safetensors").exists()
    assert (out / "model_index.json").is_file() and (out / "unet" / "notes.txt").read_text() == "the user's"
