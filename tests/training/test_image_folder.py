"""--train_data_dir reads every image under the folder: no `datasets` split rules, subfolders of
any name, and a run's own --output_dir inside the data folder neither feeds the training set nor blocks the resume."""

import numpy as np
from PIL import Image
from test_train_ncsn import TINY, run_main

from ncsn_diffusers.training.images import image_folder_sources


def make_folder(root, count=32, named_train=8, in_test=4):
    """`count` 12x12 RGB PNGs: `named_train` of them train_*.png, `in_test` of those under test/."""
    rng = np.random.default_rng(0)
    (root / "test").mkdir(parents=True)
    for i in range(count):
        name = f"train_{i}.png" if i < named_train else f"img_{i}.png"
        folder = root / "test" if i < in_test else root
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / name)


# Bug caught: datasets' imagefolder trained on the 8 train_*.png only, and a test/ subfolder crashed the run.
def test_every_image_is_read_whatever_its_name_or_subfolder(tmp_path):
    make_folder(tmp_path / "data")
    paths = [name for name, _ in image_folder_sources(tmp_path / "data")]
    assert len(paths) == 32 and len(set(paths)) == 32
    assert paths == sorted(paths)  # a fixed order: the batch order is a function of (seed, epoch) over it


# Bug caught: an --output_dir inside the data folder blocked the resume (its training_args.json matched a split
# pattern), and its sample grids would have joined the training set.
def test_an_output_dir_inside_the_data_folder_trains_on_the_data_and_resumes(tmp_path, caplog):
    data = tmp_path / "data"
    make_folder(data)
    common = [*TINY, "--train_data_dir", data, "--output_dir", data / "run", "--checkpointing_steps", "1"]
    run_main(*common, "--max_train_steps", "2")
    assert list((data / "run" / "samples").glob("*.png"))
    caplog.clear()
    run_main(*common, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")
    assert "32 training images" in caplog.text and "at step 2" in caplog.text
    assert (data / "run" / "checkpoint-3").is_dir()


def test_symlinked_subfolders_are_read_once_and_loops_named(tmp_path, caplog):
    """Bug caught: images in a symbolically linked subfolder were skipped without a word (8 of 16), though the help
    says every image file under the folder is read."""
    make_folder(tmp_path / "elsewhere", count=8, named_train=0, in_test=0)
    data = tmp_path / "data"
    make_folder(data, count=8, named_train=0, in_test=0)
    (data / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (data / "linked-again").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (data / "test" / "up").symlink_to(data, target_is_directory=True)  # a loop
    paths = [name for name, _ in image_folder_sources(data)]
    assert len(paths) == 16 and sum("/linked/" in path for path in paths) == 8
    assert "were not read again" in caplog.text and "linked-again" in caplog.text and "up" in caplog.text
