"""Streamed training data: a folder or a `datasets` table is decoded per item by DataLoader workers in
the BatchOrder's order, and gives the batches the in-memory decode gave, whatever the worker count, the process
count or the step a run resumes at; NCSNv2's ladder reads a bounded seeded subsample; unreadable files are named."""

import dataclasses
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from test_train_ncsn import TINY, log_records, max_difference, run_main, unet_weights
from test_training_utils import png_header_only

import train_ncsn
from ncsn_diffusers.schedulers.ncsnv2_ladder_design import ncsnv2_scheduler_config
from ncsn_diffusers.training import data, networks, objectives
from ncsn_diffusers.training.batch_order import BatchOrder
from ncsn_diffusers.training.image_dataset import ImageFolderDataset
from ncsn_diffusers.training.images import decode_images, hub_dataset_sources


def make_folder(root, count=24):
    """`count` RGB PNGs of varied sizes (10..13 x 12..14): random crops have room to differ."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (10 + i % 4, 12 + i % 3, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
    return root


# TINY without its explicit ladder length, which NCSNv2's ladder computes
TINY_ANY_LADDER = [a for i, a in enumerate(TINY) if "--num_noise_levels" not in TINY[max(i - 1, 0) : i + 1]]


def folder_args(folder, *extra):
    return train_ncsn.parse_args(
        [*TINY_ANY_LADDER, "--train_data_dir", str(folder), "--channels", "3", "--random_flip", "--seed", "5", *extra]
    )


class RecordingDataset(torch.utils.data.Dataset):
    """A dataset that records which items were read (workers=0: they are read in this process)."""

    def __init__(self, dataset):
        self.dataset, self.read = dataset, []

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.read.append(index)
        return self.dataset[index]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streamed_batches_equal_the_in_memory_decode_for_any_worker_count(tmp_path, num_workers):
    args = folder_args(make_folder(tmp_path / "data"), "--dataloader_num_workers", str(num_workers))
    in_memory = data.load_training_images(args)  # the whole folder decoded at once: the reference
    streamed = data.training_set(args)
    assert isinstance(streamed, ImageFolderDataset) and len(streamed) == len(in_memory) == 24
    order = BatchOrder(24, 8, args.seed)  # 3 batches per epoch: the 7 micro-steps cross two epoch boundaries
    objective = objectives.build_objective(args, streamed)
    batches = data.TrainingBatches(streamed, order, 0, 7, args, "cpu")
    for k in range(7):
        clean = batches.clean(k)
        assert clean.dtype == torch.uint8 and torch.equal(clean, in_memory[order.indices(k)])
        drawn = data.complete_batch(clean, 8, k, args.seed, objective, args)
        for a, b in zip(drawn, data.draw_batch(in_memory, order, k, args.seed, objective, args)):
            assert torch.equal(a, b)  # flips, dequantisation, levels and noise as the in-memory path draws them
    # The crops are random (another --seed cuts some images elsewhere) and the same at every read of an image.
    other_seed = data.training_set(dataclasses.replace(args, seed=6))
    assert any(not torch.equal(streamed[i], other_seed[i]) for i in range(24))
    assert torch.equal(streamed[3], streamed[3])


def test_each_process_reads_only_its_shard_and_the_shards_make_the_global_batch(tmp_path):
    args = folder_args(make_folder(tmp_path / "data"), "--dataloader_num_workers", "0")
    order = BatchOrder(24, 8, args.seed)
    whole = data.TrainingBatches(data.training_set(args), order, 0, 5, args, "cpu")
    shards = []
    for rank in range(2):
        recording = RecordingDataset(data.training_set(args))
        batches = data.TrainingBatches(recording, order, 0, 5, args, "cpu", process_index=rank, num_processes=2)
        shards.append([batches.clean(k) for k in range(5)])
        assert recording.read == torch.cat([order.indices(k, rank, 2) for k in range(5)]).tolist()
    for k in range(5):
        assert torch.equal(torch.cat([shards[0][k], shards[1][k]]), whole.clean(k))


def test_a_stream_resumed_mid_epoch_reads_the_batches_of_the_uninterrupted_one(tmp_path):
    args = folder_args(make_folder(tmp_path / "data"), "--dataloader_num_workers", "1")
    order = BatchOrder(24, 8, args.seed)
    uninterrupted = data.TrainingBatches(data.training_set(args), order, 0, 8, args, "cpu")
    reference = [uninterrupted.clean(k) for k in range(8)]
    recording = RecordingDataset(data.training_set(args))
    resumed = data.TrainingBatches(recording, order, 4, 8, dataclasses.replace(args, dataloader_num_workers=0), "cpu")
    for k in range(4, 8):  # micro-step 4 is the second batch of epoch 1
        assert torch.equal(resumed.clean(k), reference[k])
    assert recording.read == torch.cat([order.indices(k) for k in range(4, 8)]).tolist()  # nothing before step 4
    with pytest.raises(ValueError, match="Micro-step 3 was asked of a stream at micro-step 8"):
        resumed.clean(3)


def test_ncsnv2_ladder_decodes_only_a_bounded_seeded_subsample_and_matches_the_in_memory_ladder(tmp_path):
    args = folder_args(make_folder(tmp_path / "data"), "--dataloader_num_workers", "0", "--noise_ladder", "ncsnv2")
    decoded = data.load_training_images(args)
    in_memory = data.to_model_range(decoded, data.model_data_range(args))
    recording = RecordingDataset(data.training_set(args))
    sample = data.ladder_sample(recording, args, max_points=10)
    keep = torch.randperm(24, generator=torch.Generator().manual_seed(args.seed))[:10]
    assert sorted(recording.read) == sorted(keep.tolist()) and torch.equal(sample, in_memory[keep])
    generator = torch.Generator().manual_seed(args.seed)
    subsampled = ncsnv2_scheduler_config(in_memory, generator=generator, max_points=10)  # the in-memory subsample
    assert ncsnv2_scheduler_config(sample, max_points=10) == subsampled
    # Below the bound every image is read, and the ladder is the one of the whole set in memory.
    scheduler = networks.build_noise_scheduler(args, data.training_set(args), "ve")
    assert scheduler.config.sigma_max == networks.build_noise_scheduler(args, decoded, "ve").config.sigma_max
    assert args.resolution**2 * 3 * 4 * data.LADDER_MAX_POINTS <= data.LADDER_MAX_BYTES  # 8x8: bound by points


def test_bad_headers_and_bodies_are_skipped_at_start_naming_the_file(tmp_path, caplog):
    """Bug caught: only headers were checked at start-up, so a file whose body is corrupt stopped the run when its
    batch came (losing the work since the last checkpoint); each image is now decoded by the workers at start-up."""
    folder = make_folder(tmp_path / "data", count=8)
    (folder / "x_no_header.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (folder / "w_bomb.png").write_bytes(png_header_only(20000, 20000))  # 4e8 pixels: refused at Image.open
    whole = (folder / "000.png").read_bytes()
    (folder / "y_truncated.png").write_bytes(whole[: len(whole) // 2])  # its header reads, its pixels do not
    args = folder_args(folder, "--dataloader_num_workers", "2")
    with caplog.at_level(logging.WARNING):
        dataset = data.training_set(args)
    assert "x_no_header.png" in caplog.text and "y_truncated.png" in caplog.text
    assert "w_bomb.png" in caplog.text and "decompression bomb" in caplog.text
    assert len(dataset) == 8
    batches = data.TrainingBatches(dataset, BatchOrder(8, 8, 0), 0, 2, args, "cpu")
    assert batches.clean(0).shape == (8, 3, 8, 8)
    (folder / "003.png").write_bytes(whole[: len(whole) // 2])  # damaged after start-up: named when read
    with pytest.raises(ValueError, match=r"003.png could not be decoded.*--resume_from_checkpoint latest"):
        dataset[3]


def test_a_resume_on_a_changed_file_set_says_so(tmp_path, caplog):
    """Bug caught: after a file was removed, the resumed run trained on another batch order without a word; the
    checkpoint records a fingerprint of the file list and the resume compares it."""
    folder = make_folder(tmp_path / "data", count=16)
    common = [*TINY, "--train_data_dir", folder, "--channels", "3", "--output_dir", tmp_path / "run"]
    common += ["--checkpointing_steps", "1", "--resume_from_checkpoint", "latest"]
    run_main(*common, "--max_train_steps", "1")
    with caplog.at_level(logging.WARNING):
        run_main(*common, "--max_train_steps", "2")  # the same files: no word
    assert "training set changed" not in caplog.text
    (folder / "005.png").unlink()
    with caplog.at_level(logging.WARNING):
        run_main(*common, "--max_train_steps", "3")
    assert "The training set changed since" in caplog.text and "16 images then, 15 now" in caplog.text


@pytest.mark.parametrize("layout", ["parquet", "save_to_disk"])
def test_a_datasets_table_streams_the_images_the_in_memory_decode_gives(tmp_path, layout):
    import datasets

    rng = np.random.default_rng(2)
    pixels = [Image.fromarray(rng.integers(0, 256, (9 + k % 3, 10, 3), dtype=np.uint8)) for k in range(12)]
    table = datasets.Dataset.from_dict({"label": list(range(12)), "img": pixels}).cast_column("img", datasets.Image())
    if layout == "parquet":
        (tmp_path / "data").mkdir()
        table.to_parquet(str(tmp_path / "data" / "train.parquet"))
    else:
        table.save_to_disk(str(tmp_path / "data"))
    args = train_ncsn.parse_args([*TINY, "--dataset_name", str(tmp_path / "data"), "--dataloader_num_workers", "2"])
    streamed = data.training_set(args)
    in_memory, skipped = decode_images(hub_dataset_sources(str(tmp_path / "data")), 8, 3, False, seed=0)
    assert len(streamed) == 12 and skipped == []
    order = BatchOrder(12, 8, 0)
    batches = data.TrainingBatches(streamed, order, 0, 3, args, "cpu")
    for k in range(3):
        assert torch.equal(batches.clean(k), in_memory[order.indices(k)])


def test_a_run_on_a_folder_ends_with_the_same_weights_for_any_worker_count_and_when_resumed_mid_epoch(tmp_path):
    """Three real runs on one folder (24 images, batch 4 x accumulation 2: 3 steps per epoch): with 0 workers, with 2,
    and resumed from the first run's step 2 (mid-epoch) with 1 worker; all end with bit-identical weights."""
    folder = make_folder(tmp_path / "data")
    common = [*TINY_ANY_LADDER, "--train_data_dir", folder, "--channels", "3", "--max_train_steps", "4",
              "--train_batch_size", "4", "--gradient_accumulation_steps", "2", "--random_flip",
              "--noise_ladder", "ncsnv2", "--checkpointing_steps", "2"]  # fmt: skip
    run_main(*common, "--output_dir", tmp_path / "w0", "--dataloader_num_workers", "0")
    run_main(*common, "--output_dir", tmp_path / "w2", "--dataloader_num_workers", "2")
    resume = ["--resume_from_checkpoint", tmp_path / "w0" / "checkpoint-2", "--dataloader_num_workers", "1"]
    run_main(*common, "--output_dir", tmp_path / "resumed", *resume)
    for other in ("w2", "resumed"):
        assert max_difference(unet_weights(tmp_path / "w0"), unet_weights(tmp_path / other)) == 0
        assert log_records(tmp_path / other)[-1]["loss_dsm"] == log_records(tmp_path / "w0")[-1]["loss_dsm"]


def test_a_negative_worker_count_is_refused_naming_the_flag(capsys):
    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--dataloader_num_workers", "-1"])
    assert "--dataloader_num_workers must be an integer >= 0" in capsys.readouterr().err


def test_the_default_worker_count_shares_the_cpus_between_the_processes_of_a_machine(monkeypatch):
    from ncsn_diffusers.training.streaming import MAX_DEFAULT_WORKERS, default_num_workers

    cpus = len(os.sched_getaffinity(0))
    assert default_num_workers() == min(MAX_DEFAULT_WORKERS, cpus)  # one process: up to 4 workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cpus))  # a process per CPU: one worker each
    assert default_num_workers() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cpus))  # more processes than CPUs: still one, never none
    assert default_num_workers() == 1
