"""A resumed run against the settings of its checkpoint: the optimiser's settings and the
network's shape must match (refused naming the flag, never a raw load_state_dict error), another data set, ladder or
sigma sampling is warned about, and pruning a symlinked checkpoint removes the link only."""

import json
import shutil

import pytest
from test_train_ncsn import TINY, run_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step tiny run with a checkpoint at each step, copied fresh for each test."""
    root = tmp_path_factory.mktemp("trained")
    run_main(*TINY, "--max_train_steps", "2", "--checkpointing_steps", "1", "--output_dir", root / "out")
    return root / "out"


def resumable_copy(trained, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    return [*TINY, "--checkpointing_steps", "1", "--output_dir", out, "--resume_from_checkpoint", "latest"], out


# Bug caught: the checkpoint's optimiser state silently kept the old learning rate and betas while the card and
# training_args.json recorded the new ones.
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning_rate", "0.001"], "trained with --learning_rate 0.002, this run has --learning_rate 0.001"),
        (["--adam_beta1", "0.5"], "trained with --adam_beta1 0.9, this run has --adam_beta1 0.5"),
    ],
)
def test_resume_with_another_optimiser_setting_is_refused(trained, tmp_path, flags, message):
    resume, _ = resumable_copy(trained, tmp_path)
    with pytest.raises(ValueError, match=message):
        run_main(*resume, "--max_train_steps", "3", *flags)


# Bug caught: another sigma distribution or noise ladder resumed without a word.
def test_resume_with_another_sigma_sampling_or_ladder_warns(trained, tmp_path, caplog):
    resume, out = resumable_copy(trained, tmp_path)
    caplog.clear()
    run_main(*resume, "--max_train_steps", "3", "--sigma_sampling", "discrete", "--sigma_min", "0.05")
    assert "--sigma_sampling log_uniform, this run has --sigma_sampling discrete" in caplog.text
    assert "--sigma_min 0.02, this run has --sigma_min 0.05" in caplog.text
    assert (out / "checkpoint-3").is_dir()


# Bug caught: a resume with another network width raised torch's raw load_state_dict error (size mismatch).
def test_resume_with_another_network_shape_names_the_flags(tmp_path):
    paper = [*TINY, "--model_type", "ncsnv2", "--checkpointing_steps", "1", "--output_dir", tmp_path / "v2"]
    run_main(*paper, "--max_train_steps", "1", "--base_channels", "4")
    resume = [*paper, "--max_train_steps", "2", "--resume_from_checkpoint", "latest", "--base_channels", "8"]
    with pytest.raises(ValueError, match="trained with --base_channels 4, this run has --base_channels 8"):
        run_main(*resume)
    state = tmp_path / "v2" / "checkpoint-1" / "training_state.json"  # a checkpoint that does not record the width
    record = json.loads(state.read_text())
    del record["settings"]["base_channels"]
    state.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="holds another network than this run builds.*--base_channels"):
        run_main(*resume)


# Bug caught: shutil.rmtree on a symlinked checkpoint raised OSError and crashed the run at its next save.
def test_pruning_a_symlinked_checkpoint_removes_the_link_not_its_target(trained, tmp_path):
    resume, out = resumable_copy(trained, tmp_path)
    elsewhere = tmp_path / "elsewhere" / "checkpoint-1"
    elsewhere.parent.mkdir()
    shutil.move(out / "checkpoint-1", elsewhere)
    (out / "checkpoint-1").symlink_to(elsewhere, target_is_directory=True)
    run_main(*resume, "--max_train_steps", "4", "--checkpoints_total_limit", "2")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert (elsewhere / "training_state.json").is_file()  # the link's target is untouched
