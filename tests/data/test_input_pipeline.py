"""The input pipeline over an image folder and over a prepared folder: same pairs, seeded epochs, worker shards,
the same batches without TensorFlow, and a prepared folder of the old format refused with the command to redo it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import IMAGES, NIH, REPO

from pipeline.core.errors import InputError
from pipeline.data import input_pipeline, prepare, prepared

SIZE = 64
BATCH = 5  # 55 test images: 11 full batches, so one epoch is exactly every image once


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[input_pipeline.Source, input_pipeline.Source]:
    out = tmp_path_factory.mktemp("prepared") / "test"
    prepare.prepare(NIH / "test.csv", IMAGES, out, SIZE, workers=2, log=lambda line: None)
    return input_pipeline.open_source(out), input_pipeline.open_source(NIH / "test.csv", IMAGES)


def _pairs(dataset) -> list[tuple[str, tuple[float, ...]]]:
    """(hash of the image bytes, labels) of every example of a batched dataset, sorted: order aside."""
    pairs = []
    for x, y in dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset:
        for image, labels in zip(x, y, strict=True):
            pairs.append((hashlib.sha256(image.astype(np.uint8).tobytes()).hexdigest(), tuple(labels)))
    return sorted(pairs)


def test_prepared_and_image_folder_give_the_same_pairs_over_an_epoch(sources):
    prepared, folder = sources
    assert len(prepared) == len(folder) == 55 and prepared.prepared and not folder.prepared
    steps = input_pipeline.steps_per_epoch(prepared, BATCH)
    assert steps == input_pipeline.steps_per_epoch(folder, BATCH) == 11
    ours = _pairs(input_pipeline.training_batches(prepared, SIZE, BATCH, steps, seed=3, augment=False))
    theirs = _pairs(input_pipeline.training_batches(folder, SIZE, BATCH, steps, seed=3, augment=False))
    assert ours == theirs and len({image for image, _ in ours}) == 55
    assert _pairs(input_pipeline.evaluation_batches(prepared, SIZE, 16)) == ours


def test_epochs_are_seeded_on_both_paths(sources):
    for source in sources:
        steps = input_pipeline.steps_per_epoch(source, BATCH)

        def epoch(seed: int, source=source, steps=steps) -> np.ndarray:
            batches = input_pipeline.training_batches(source, SIZE, BATCH, steps, seed)
            return np.concatenate([x for x, _ in batches.as_numpy_iterator()])

        first = epoch(1)
        assert first.shape == (55, SIZE, SIZE, 1) and first.dtype == np.float32
        assert first.min() >= 0 and first.max() <= 255
        np.testing.assert_array_equal(epoch(1), first)  # what a resumed run relies on
        assert not np.array_equal(epoch(2), first)


def test_augmentation_moves_images_a_little_and_never_flips(sources):
    prepared, _ = sources
    steps = input_pipeline.steps_per_epoch(prepared, BATCH)
    plain = input_pipeline.training_batches(prepared, SIZE, BATCH, steps, seed=5, augment=False)
    moved = input_pipeline.training_batches(prepared, SIZE, BATCH, steps, seed=5, augment=True)
    for (x, _), (a, _) in zip(plain.as_numpy_iterator(), moved.as_numpy_iterator(), strict=True):
        assert all(not np.array_equal(original, augmented) for original, augmented in zip(x, a, strict=True))
    # A bright dot moves a little: rotation <= 6 degrees, zoom <= 10 %, shift <= 5 % of 64 px bound its move.
    dot = np.zeros((64, SIZE, SIZE, 1), np.float32)
    dot[:, 19:22, 39:42] = 255.0
    out = input_pipeline.augment_images(dot[..., 0], np.random.default_rng(7))
    peaks = np.array([np.unravel_index(np.argmax(image), image.shape) for image in out])
    moves = np.hypot(peaks[:, 0] - 20, peaks[:, 1] - 40)
    assert moves.max() <= 7 and moves.max() >= 1
    # Something bright on the image's left stays on the left under any draw: no horizontal flip.
    marked = np.zeros((64, SIZE, SIZE, 1), np.float32)
    marked[:, 16:48, 4:24] = 255.0
    for seed in range(5):
        out = input_pipeline.augment_images(marked[..., 0], np.random.default_rng(seed))
        left, right = out[:, :, : SIZE // 2].mean(axis=(1, 2)), out[:, :, SIZE // 2 :].mean(axis=(1, 2))
        assert (left > 10 * right).all()


def test_workers_read_disjoint_shards_for_the_same_number_of_steps(sources):
    prepared, folder = sources
    for source in (prepared, folder):
        sizes = source.shard_sizes(2)
        assert sum(sizes) == 55 and abs(sizes[0] - sizes[1]) <= 4
        steps = input_pipeline.steps_per_epoch(source, global_batch=10, workers=2)
        assert steps == max(-(-size // 5) for size in sizes)
        seen = []
        for worker in (0, 1):
            rows = source.rows(SIZE, worker, 2)
            unique = {hashlib.sha256(image.tobytes()).hexdigest() for image in rows.images(np.arange(len(rows)))}
            epoch = input_pipeline.training_batches(source, SIZE, 5, steps, 1, worker=worker, workers=2, augment=False)
            batches = list(epoch)
            assert len(batches) == steps and all(x.shape[0] == 5 for x, _ in batches)  # wraps around, never short
            seen.append(unique)
        assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 55
    with pytest.raises(InputError, match="16 shards, fewer than the 17 workers"):
        prepared.shard_sizes(17)


def test_sizes_and_refusals(sources, tmp_path):
    prepared, _ = sources
    small = next(iter(input_pipeline.evaluation_batches(prepared, 32, 4)))[0]
    assert small.shape == (4, 32, 32, 1)
    with pytest.raises(InputError, match="prepared at 64 px, smaller than `image_size` 96"):
        input_pipeline.training_batches(prepared, 96, BATCH, 1, 0)
    with pytest.raises(InputError, match="without manifest.json"):
        input_pipeline.open_source(tmp_path)
    with pytest.raises(InputError, match="needs its image folder"):
        input_pipeline.open_source(NIH / "test.csv")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in prepared.path.iterdir():
        if path.name != "shard-00003-of-00016.u8":
            (damaged / path.name).symlink_to(path)
    with pytest.raises(InputError, match="shard shard-00003-of-00016.u8 is missing"):
        input_pipeline.open_source(damaged)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for path in prepared.path.iterdir():
        data = path.read_bytes()
        (truncated / path.name).write_bytes(data[:-1] if path.name == "shard-00003-of-00016.u8" else data)
    with pytest.raises(InputError, match="shard shard-00003-of-00016.u8 is not 4 images of 64 px"):
        input_pipeline.open_source(truncated)


def test_a_folder_of_the_old_tfrecord_format_is_refused_with_the_command_that_prepares_it_again(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    manifest = {"format": "chestxray-prepared-tfrecord", "format_version": 1, "image_size": 224,
                "labels_file": "nih/train.csv", "images_dir": "/data/images", "shards": []}
    (old / prepared.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError) as caught:
        input_pipeline.open_source(old)
    message = str(caught.value)
    assert "older version (TFRecord shards)" in message and "\n" not in message
    command = "pipeline prepare --labels nih/train.csv --images /data/images --out NEW_FOLDER --image-size 224"
    assert command in message


def test_numpy_batches_are_the_tf_data_batches(sources):
    for source in sources:
        steps = input_pipeline.steps_per_epoch(source, BATCH)
        arrays = list(input_pipeline.training_arrays(source, SIZE, BATCH, steps, seed=4, epoch=2))
        assert len(arrays) == steps
        ours = np.concatenate([x for x, _ in arrays])
        np.testing.assert_array_equal(ours, np.concatenate([x for x, _ in input_pipeline.training_arrays(
            source, SIZE, BATCH, steps, seed=4, epoch=2)]))
        assert not np.array_equal(ours, np.concatenate([x for x, _ in input_pipeline.training_arrays(
            source, SIZE, BATCH, steps, seed=4, epoch=3)]))
        steps = 3
        tf_epoch = list(input_pipeline.training_batches(source, SIZE, BATCH, steps, 9, worker=1, workers=2))
        np_epoch = list(input_pipeline.training_arrays(source, SIZE, BATCH, steps, 9, 0, worker=1, workers=2))
        assert len(tf_epoch) == len(np_epoch) == steps
        for (a, b), (c, d) in zip(tf_epoch, np_epoch, strict=True):
            np.testing.assert_array_equal(a.numpy(), c)
            np.testing.assert_array_equal(b.numpy(), d)
    prepared_source, _ = sources
    tf_batches = list(input_pipeline.evaluation_batches(prepared_source, SIZE, 16).as_numpy_iterator())
    np_batches = list(input_pipeline.evaluation_arrays(prepared_source, SIZE, 16))
    assert len(tf_batches) == len(np_batches) == 4
    for (a, b), (c, d) in zip(tf_batches, np_batches, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


NO_TENSORFLOW = textwrap.dedent(
    """
    import hashlib, sys

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("TensorFlow is not installed here (blocked by the test)")

    sys.meta_path.insert(0, NoTensorFlow())
    from pipeline.data import input_pipeline, prepare

    folder, labels, images, out = sys.argv[1:5]
    prepare.prepare(labels, images, out, 64, workers=2, log=lambda line: None)
    digest = hashlib.sha256()
    for source in (input_pipeline.open_source(out), input_pipeline.open_source(labels, images)):
        steps = input_pipeline.steps_per_epoch(source, 10, workers=2)
        # Epochs 0 and 1 of worker 1, as a run that started at epoch 0 and one resumed at epoch 1 read them.
        for epoch in (0, 1):
            for x, y in input_pipeline.training_arrays(source, 48, 5, steps, 11, epoch, worker=1, workers=2):
                assert x.dtype.name == y.dtype.name == "float32" and x.shape == (5, 48, 48, 1), (x.shape, x.dtype)
                digest.update(x.tobytes() + y.tobytes())
        for x, y in input_pipeline.evaluation_arrays(source, 48, 16):
            digest.update(x.tobytes() + y.tobytes())
    assert not any(name == "tensorflow" or name.startswith("tensorflow.") for name in sys.modules)
    print(digest.hexdigest())
    """
)


def test_the_input_path_runs_without_tensorflow_and_reproduces_after_a_resume(tmp_path):
    """`prepare` and both sources' NumPy batches in a process where `import tensorflow` fails; a second process
    (a resumed run) gets bit-identical batches."""
    digests = []
    for attempt in range(2):
        result = subprocess.run(
            [sys.executable, "-c", NO_TENSORFLOW, REPO, NIH / "test.csv", IMAGES, tmp_path / f"{attempt}"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        digests.append(result.stdout.strip())
    assert digests[0] == digests[1] and len(digests[0]) == 64
