"""Checkpoint bookkeeping, image decoding, the lock and the deterministic batch order of ncsn_diffusers.training."""

import json
import logging
import os
import time

import numpy as np
import pytest
import torch
from pickle_payload import plant_payloads
from PIL import Image

from ncsn_diffusers.training.batch_order import BatchOrder, derived_seed
from ncsn_diffusers.training.checkpointing import (
    STATE_FILE,
    abandon_later_checkpoints,
    complete_checkpoints,
    decode_state,
    discard_checkpoint,
    encode_state,
    latest_checkpoint,
    load_checkpoint,
    read_training_state,
    remove_stale_temporaries,
    save_checkpoint,
)
from ncsn_diffusers.training.images import decode_images, hub_dataset_sources, image_folder_sources, preprocess_image
from ncsn_diffusers.training.run_dir import LOCK_FILE, OutputDirLock
from ncsn_diffusers.training.run_settings import compare_run_settings


def make_checkpoint(root, name, complete=True):
    path = root / name
    path.mkdir()
    if complete:
        (path / STATE_FILE).write_text(json.dumps({"step": 0}))
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def test_latest_checkpoint_ignores_partial_and_foreign_folders(tmp_path):
    make_checkpoint(tmp_path, "checkpoint-9")
    make_checkpoint(tmp_path, "checkpoint-10")  # numeric, not lexicographic order: 10 > 9
    make_checkpoint(tmp_path, "checkpoint-20.tmp")  # killed while saving
    make_checkpoint(tmp_path, "checkpoint-30", complete=False)  # no state file: not written by save_checkpoint
    make_checkpoint(tmp_path, "checkpoint-40.tmp-delete")  # killed while pruning
    make_checkpoint(tmp_path, "checkpoint-x")
    (tmp_path / "checkpoint-50").write_text("a file, not a folder")

    assert [step for step, _ in complete_checkpoints(tmp_path)] == [9, 10]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert latest_checkpoint(tmp_path / "missing") is None

    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == ["checkpoint-20.tmp", "checkpoint-40.tmp-delete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-10",
        "checkpoint-30",
        "checkpoint-50",
        "checkpoint-9",
        "checkpoint-x",
    ]


def test_only_the_files_save_checkpoint_writes_are_ever_deleted(tmp_path):
    """Catches: a killed save's `checkpoint-*.tmp` or a pruned checkpoint removed with a file someone else put in it,
    and a checkpoint-* without a state file (another tool's) deleted when the run reaches its step."""
    stale = make_checkpoint(tmp_path, "checkpoint-20.tmp")
    (stale / "model.safetensors").write_bytes(b"ours")
    (stale / "notes.txt").write_text("theirs")
    assert remove_stale_temporaries(tmp_path) == [] and [p.name for p in stale.iterdir()] == ["notes.txt"]

    pruned = make_checkpoint(tmp_path, "checkpoint-5")
    (pruned / "rng_state_0.safetensors").write_bytes(b"ours")
    (pruned / "thesis.tex").write_text("theirs")
    discard_checkpoint(pruned)
    (aside,) = tmp_path.glob("abandoned-checkpoint-5-*")
    assert not pruned.exists() and [p.name for p in aside.iterdir()] == ["thesis.tex"]

    foreign = make_checkpoint(tmp_path, "checkpoint-10", complete=False)
    (foreign / "pytorch_model.bin").write_text("w")
    with pytest.raises(RuntimeError, match="checkpoint-10 was not written by train_ncsn.py"):
        discard_checkpoint(foreign)
    assert (foreign / "pytorch_model.bin").read_text() == "w"


def test_read_training_state_rejects_incomplete_folder(tmp_path):
    path = make_checkpoint(tmp_path, "checkpoint-3", complete=False)
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        read_training_state(path)


def test_save_checkpoint_is_atomic_and_prunes(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    (tmp_path / "checkpoint-2.tmp").mkdir()  # a stale temporary of the same step is replaced
    for step in (1, 2, 3):
        final = save_checkpoint(accelerator, tmp_path, step, {"epoch": 0}, total_limit=2, model=model)
        assert final == tmp_path / f"checkpoint-{step}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    state = read_training_state(tmp_path / "checkpoint-3")
    assert (state["epoch"], state["step"]) == (0, 3)
    assert (tmp_path / "checkpoint-3" / "model.safetensors").is_file()

    # Saving a step that exists (a re-run from an older checkpoint) replaces it whole.
    with torch.no_grad():
        model.weight.fill_(7.0)
    save_checkpoint(accelerator, tmp_path, 3, {"epoch": 1}, total_limit=None, model=model)
    from safetensors.torch import load_file

    assert torch.all(load_file(tmp_path / "checkpoint-3" / "model.safetensors")["weight"] == 7.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------


def test_preprocess_converts_modes_to_the_requested_channels():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(np.full((6, 6, 3), (200, 100, 50), dtype=np.uint8))
    gray = preprocess_image(rgb, 6, 1, True, rng)
    assert gray.shape == (1, 6, 6) and gray.dtype == np.uint8
    # ITU-R 601-2 luma, PIL's L conversion: (299 R + 587 G + 114 B) / 1000
    assert np.all(gray == round((299 * 200 + 587 * 100 + 114 * 50) / 1000))

    l_image = Image.fromarray(np.full((6, 6), 77, dtype=np.uint8))
    assert np.all(preprocess_image(l_image, 6, 3, True, rng) == 77)  # L -> RGB repeats the channel

    rgba = Image.fromarray(np.dstack([np.full((6, 6, 3), 10, np.uint8), np.zeros((6, 6), np.uint8)]), mode="RGBA")
    assert np.all(preprocess_image(rgba, 6, 3, True, rng) == 10)

    palette = rgb.convert("P")
    assert preprocess_image(palette, 6, 3, True, rng).shape == (3, 6, 6)

    sixteen = Image.fromarray(np.arange(36, dtype=np.uint16).reshape(6, 6) * 1000)  # mode I;16
    out = preprocess_image(sixteen, 6, 1, True, rng)
    assert out[0, 0, 0] == 0 and out[0, -1, -1] == round(35000 / 65535 * 255)  # by 16-bit white, not stretched


def test_preprocess_resizes_the_short_side_and_crops():
    # A 4x8 (h x w) image whose columns are 0..7: the short side is already 4, so only the crop acts.
    columns = np.tile(np.arange(8, dtype=np.uint8) * 30, (4, 1))
    image = Image.fromarray(columns)
    centre = preprocess_image(image, 4, 1, True, np.random.default_rng(0))
    assert np.array_equal(centre[0], columns[:, 2:6])  # centre: columns 2..5
    lefts = {int(preprocess_image(image, 4, 1, False, np.random.default_rng(s))[0, 0, 0]) // 30 for s in range(40)}
    assert lefts == {0, 1, 2, 3, 4}  # random crops: every left edge 0..4 occurs

    small = preprocess_image(Image.fromarray(np.zeros((3, 5), np.uint8)), 12, 1, True, np.random.default_rng(0))
    assert small.shape == (1, 12, 12)


def test_decode_images_skips_a_corrupt_file_and_names_it(tmp_path, caplog):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    sources = [(str(p), (lambda p=p: Image.open(p))) for p in (good, bad)]
    with caplog.at_level(logging.WARNING):
        images, skipped = decode_images(sources, 4, 1, True)
    assert images.shape == (1, 1, 4, 4) and images.dtype == torch.uint8
    assert skipped == [str(bad)]
    assert str(bad) in caplog.text

    with pytest.raises(ValueError, match="None of the 1 images"):
        decode_images(sources[1:], 4, 1, True)


def test_image_folder_mixed_modes_and_sizes(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((10, 14, 3), np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "sub" / "gray.jpg")
    Image.fromarray(np.zeros((20, 12, 4), np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("P").save(tmp_path / "palette.gif")
    images, skipped = decode_images(image_folder_sources(tmp_path), 8, 3, False)
    assert images.shape == (4, 3, 8, 8) and skipped == []


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        list(image_folder_sources(tmp_path / "nope"))
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="contains no image files"):
        list(image_folder_sources(tmp_path))


def test_dataset_name_reads_a_local_datasets_folder(tmp_path):
    # The `--dataset_name` path on a local folder of parquet files, the layout of a Hub dataset repo.
    import datasets

    pixels = [np.full((6, 5, 3), 40 * k, np.uint8) for k in range(3)]
    table = datasets.Dataset.from_dict({"img": [Image.fromarray(p) for p in pixels], "label": [0, 1, 2]})
    table.cast_column("img", datasets.Image()).to_parquet(str(tmp_path / "train.parquet"))
    images, skipped = decode_images(hub_dataset_sources(str(tmp_path)), 4, 1, False)
    assert images.shape == (3, 1, 4, 4) and images.dtype == torch.uint8 and skipped == []
    for k in range(3):  # a constant grey image stays that grey through resizing and conversion to one channel
        assert torch.all(images[k] == 40 * k)


def test_dataset_without_image_column_names_its_columns(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b"]}).to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(ValueError, match=r"has no image column \(columns: \['text'\]\)"):
        list(hub_dataset_sources(str(tmp_path)))


def test_hub_dataset_offline_fails_at_once(monkeypatch):
    start = time.monotonic()
    with pytest.raises(ValueError, match="--dataset_name 'someone/not-cached-anywhere'"):
        list(hub_dataset_sources("someone/not-cached-anywhere"))
    assert time.monotonic() - start < 10  # no network retries (conftest sets HF_HUB_OFFLINE=1)


# ---------------------------------------------------------------------------------------------------------------------
# Deterministic randomness
# ---------------------------------------------------------------------------------------------------------------------


def test_derived_seed_is_a_pure_function_of_its_arguments():
    assert derived_seed(0, 1, 5) == derived_seed(0, 1, 5)
    seeds = {derived_seed(s, stream, step) for s in range(3) for stream in range(2) for step in range(100)}
    assert len(seeds) == 600
    assert all(0 <= s < 2**63 for s in seeds)


def test_batch_order_shards_concatenate_to_the_global_batch():
    one = BatchOrder(num_images=50, global_batch_size=8, seed=3)
    two = BatchOrder(num_images=50, global_batch_size=8, seed=3)
    assert one.batches_per_epoch == 6  # 50 // 8, the last 2 images of each epoch are dropped
    for micro_step in range(20):
        whole = one.indices(micro_step)
        shards = [two.indices(micro_step, rank, 2) for rank in range(2)]
        assert [len(s) for s in shards] == [4, 4]
        assert torch.equal(torch.cat(shards), whole)

    epoch0 = torch.cat([one.indices(k) for k in range(6)])
    assert len(set(epoch0.tolist())) == 48  # a permutation: no image twice within an epoch
    epoch1 = torch.cat([one.indices(k) for k in range(6, 12)])
    assert not torch.equal(epoch0, epoch1)  # a fresh order each epoch
    assert one.epoch_of(11) == 1 and one.epoch_of(12) == 2

    with pytest.raises(ValueError, match="larger than the 5 training images"):
        BatchOrder(num_images=5, global_batch_size=8, seed=0)


# ---------------------------------------------------------------------------------------------------------------------
# Safety: no pickle on load, damage named, lineage, settings, lock, decompression bombs
# ---------------------------------------------------------------------------------------------------------------------


def tiny_training_objects(accelerator):
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=2, num_training_steps=20)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema = EMAModel(model.parameters(), decay=0.9, use_ema_warmup=True)
    return model, optimizer, lr_scheduler, ema


def train_steps(objects, steps):
    model, optimizer, lr_scheduler, ema = objects
    losses = []
    for _ in range(steps):
        loss = model(torch.ones(5, 3)).pow(2).mean()  # dropout draws from the global torch generator
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        ema.step(model.parameters())
        losses.append(loss.item())
    return losses


def test_checkpoint_round_trip_continues_bit_identically_without_pickle(tmp_path):
    """Model, AdamW, lr schedule, EMA and the dropout generator come back exactly from safetensors + JSON: training
    on from the loaded checkpoint repeats the original's losses and weights bit for bit."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    objects = tiny_training_objects(accelerator)
    train_steps(objects, 3)
    names = dict(zip(("model", "optimizer", "lr_scheduler", "ema"), objects))
    path = save_checkpoint(accelerator, tmp_path, 3, {"epoch": 0}, None, **names)
    assert sorted(p.name for p in path.iterdir()) == [
        "ema.safetensors", "model.safetensors", "optimizer.safetensors", "rng_state_0.safetensors", STATE_FILE,
    ]  # fmt: skip
    reference = train_steps(objects, 4)

    fresh = tiny_training_objects(accelerator)
    train_steps(fresh, 1)  # different weights, moments, schedule position and generator state
    state = load_checkpoint(path, accelerator, **dict(zip(("model", "optimizer", "lr_scheduler", "ema"), fresh)))
    assert state["step"] == 3
    assert train_steps(fresh, 4) == reference
    for a, b in zip(objects[0].state_dict().values(), fresh[0].state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(objects[3].shadow_params, fresh[3].shadow_params):
        assert torch.equal(a, b)
    assert objects[2].get_last_lr() == fresh[2].get_last_lr()


def test_encode_state_round_trips_tuples_int_keys_and_floats():
    state = {"state": {0: {"step": torch.tensor(3.0)}}, "groups": [{"betas": (0.9, 0.999), "lr": 0.1 + 0.2}]}
    encoded, tensors = encode_state(state)
    assert decode_state(json.loads(json.dumps(encoded)), tensors) == state
    with pytest.raises(TypeError, match="Cannot store function"):
        encode_state({"fn": lambda: 0})


def test_load_checkpoint_never_unpickles(tmp_path, caplog):
    """Pickles planted in a checkpoint (under the names accelerate's save_state uses, and others) are never opened;
    a checkpoint in the old pickle format is refused with a message saying why."""
    from accelerate import Accelerator

    marker = tmp_path / "payload-ran"
    plant_payloads(tmp_path, tmp_path / "control", ["control.pkl"])
    torch.load(tmp_path / "control.pkl", weights_only=False)
    assert (tmp_path / "control").exists()  # the payload is live: unpickling it runs code

    accelerator = Accelerator(cpu=True)
    objects = dict(zip(("model", "optimizer", "lr_scheduler", "ema"), tiny_training_objects(accelerator)))
    path = save_checkpoint(accelerator, tmp_path / "out", 1, {}, None, **objects)
    planted = ["custom_checkpoint_0.pkl", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "model.bin"]
    plant_payloads(path, marker, planted)
    with caplog.at_level(logging.WARNING):
        load_checkpoint(path, accelerator, **objects)
    assert all(name in caplog.text for name in planted)

    old = tmp_path / "old" / "checkpoint-1"
    old.mkdir(parents=True)
    (old / STATE_FILE).write_text(json.dumps({"step": 1, "epoch": 0}))
    plant_payloads(old, marker, planted)
    with pytest.raises(ValueError, match="older train_ncsn.py in accelerate's pickle format"):
        load_checkpoint(old, accelerator, **objects)
    assert not marker.exists()


def test_damaged_checkpoint_names_the_file_and_offers_the_previous_one(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    objects = tiny_training_objects(accelerator)
    train_steps(objects, 1)  # the optimizer has moments to save
    objects = dict(zip(("model", "optimizer", "lr_scheduler", "ema"), objects))
    for step in (4, 8):
        save_checkpoint(accelerator, tmp_path, step, {}, None, **objects)
    latest = tmp_path / "checkpoint-8"
    data = (latest / "optimizer.safetensors").read_bytes()
    (latest / "optimizer.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one flipped bit
    with pytest.raises(
        ValueError, match=r"checkpoint-8 is damaged: optimizer.safetensors does not match.*checkpoint-4"
    ):
        load_checkpoint(latest, accelerator, **objects)
    (latest / "ema.safetensors").unlink()
    with pytest.raises(ValueError, match=r"ema.safetensors is missing.*--resume_from_checkpoint .*checkpoint-4"):
        load_checkpoint(latest, accelerator, **objects)
    (tmp_path / "checkpoint-4" / STATE_FILE).write_text('{"step": 4, "fi')  # torn state file
    with pytest.raises(ValueError, match=r"checkpoint-4 is damaged: .*not valid JSON.*no earlier complete checkpoint"):
        load_checkpoint(tmp_path / "checkpoint-4", accelerator, **objects)


def test_abandon_later_checkpoints_moves_them_out_of_reach(tmp_path):
    for step in (5, 10, 15, 40):
        make_checkpoint(tmp_path, f"checkpoint-{step}")
    moved = abandon_later_checkpoints(tmp_path, 10)
    assert [old.name for old, _ in moved] == ["checkpoint-15", "checkpoint-40"]
    for old, new in moved:
        assert not old.exists() and (new / STATE_FILE).is_file()
        assert new.name.startswith(f"abandoned-{old.name}-")
    assert [step for step, _ in complete_checkpoints(tmp_path)] == [5, 10]  # neither latest nor pruning sees them
    make_checkpoint(tmp_path, "checkpoint-15")
    again = abandon_later_checkpoints(tmp_path, 10)  # the same step abandoned twice in one second: no clash
    assert len(list(tmp_path.glob("abandoned-checkpoint-15-*"))) == 2 and again[0][1].is_dir()


def test_compare_run_settings_refuses_model_changes_and_warns_about_the_rest():
    saved = {"model_preset": "tiny", "use_ema": True, "seed": 0, "train_batch_size": 8, "max_train_steps": 40}
    must = ("model_preset", "use_ema")
    with pytest.raises(ValueError, match="trained with --model_preset tiny, this run has --model_preset digits.*Pass"):
        compare_run_settings("ckpt", saved, {**saved, "model_preset": "digits"}, must)
    with pytest.raises(ValueError, match="trained with --use_ema, this run has --no-use_ema"):
        compare_run_settings("ckpt", saved, {**saved, "use_ema": False}, must)
    warnings = compare_run_settings("ckpt", saved, {**saved, "seed": 1, "train_batch_size": 4}, must)
    assert len(warnings) == 2 and "--seed 0, this run has --seed 1" in warnings[0]
    assert compare_run_settings("ckpt", {}, saved, must) == []  # nothing recorded, nothing compared


LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_output_dir_lock_names_the_holder_and_survives_its_kill(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path / LOCK_FILE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"in use by another training run \(pid {holder.pid},"):
            OutputDirLock(tmp_path).acquire()
        with pytest.raises(RuntimeError, match=str(holder.pid)):
            OutputDirLock(tmp_path).check_free()
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock, the file stays behind
        holder.wait()
    assert (tmp_path / LOCK_FILE).exists()
    with OutputDirLock(tmp_path) as lock:
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(RuntimeError, match=f"pid {os.getpid()}"):  # a second open file in this process too
            OutputDirLock(tmp_path).acquire()
        assert lock.fd is not None
    assert not (tmp_path / LOCK_FILE).exists()  # released and removed


def png_header_only(width, height):
    """A PNG that declares width x height pixels but holds none: PIL reads the size at open."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def test_decode_images_skips_a_decompression_bomb_and_names_it(tmp_path, caplog):
    good, huge = tmp_path / "good.png", tmp_path / "huge.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(good)
    huge.write_bytes(png_header_only(20000, 20000))
    sources = [(str(p), (lambda p=p: Image.open(p))) for p in (huge, good)]
    with caplog.at_level(logging.WARNING):
        images, skipped = decode_images(sources, 4, 1, True)
    assert images.shape == (1, 1, 4, 4) and skipped == [str(huge)]
    assert str(huge) in caplog.text and "decompression bomb" in caplog.text
