"""The input pipeline over an image folder and over a prepared folder: same pairs, seeded epochs, worker shards."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import IMAGES, NIH

from pipeline.core.errors import InputError
from pipeline.data import input_pipeline, prepare

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
    for x, y in dataset.as_numpy_iterator():
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
    out = input_pipeline.augment_batch(tf.constant(dot), tf.constant([7, 0])).numpy()[..., 0]
    peaks = np.array([np.unravel_index(np.argmax(image), image.shape) for image in out])
    moves = np.hypot(peaks[:, 0] - 20, peaks[:, 1] - 40)
    assert moves.max() <= 7 and moves.max() >= 1
    # Something bright on the image's left stays on the left under any draw: no horizontal flip.
    marked = np.zeros((64, SIZE, SIZE, 1), np.float32)
    marked[:, 16:48, 4:24] = 255.0
    for seed in range(5):
        out = input_pipeline.augment_batch(tf.constant(marked), tf.constant([seed, 0])).numpy()[..., 0]
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
            unique = {image for image, _ in _pairs(source.images(SIZE, worker, 2).batch(8))}
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
        if path.name != "shard-00003-of-00016.tfrecord":
            (damaged / path.name).symlink_to(path)
    with pytest.raises(InputError, match="shard shard-00003-of-00016.tfrecord is missing"):
        input_pipeline.open_source(damaged)
