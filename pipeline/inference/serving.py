"""Serve predictions from a checkpoint's exported inference model, so answering needs no TensorFlow.

`export` turns a ``.keras`` checkpoint into an ONNX model beside it (``best.keras`` -> ``best.onnx`` and
``best.onnx.json``): the preprocessing (gray to RGB, ImageNet normalisation) is frozen into the graph as
constants, and the graph returns the probabilities, the last feature maps (``relu``) and the 14 class
activation maps, so the Grad-CAM heatmaps (`maps_from_cams`; `explain.gradcam` holds the maths and the
overlay) and the typicality score (`inference.ood`) come from the same forward pass. `load_predictor` runs
that export with ONNX Runtime when it was made from the checkpoint as it is now (its SHA-256 is recorded)
and its own bytes match the SHA-256 recorded at export (else it is refused: altered or damaged), and
otherwise falls back to the checkpoint in Keras, saying so: the checkpoint stays the source of truth.
TensorFlow is imported only by `export` and the fallback.

About 400 lines: the export, its verification (the recorded SHA-256, finite outputs), the two predictors and the
statistics pass share one contract (the export's outputs and its info file), easiest to check in one place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np

from pipeline.core.errors import InputError, reason
from pipeline.core.files import sha256_cached, sha256_of, write_json_atomic
from pipeline.data import imaging
from pipeline.inference import ood

if TYPE_CHECKING:
    import keras

FORMAT = "onnx"
OPSET = 17
INPUT = "image"
OUTPUTS = ("probabilities", "features", "cams")
BATCH_SIZE = 16
MAX_STATS_IMAGES = 5000  # training / validation images read for the typicality statistics, at most


class Forward(NamedTuple):
    """One forward pass over a batch of ``n`` images."""

    probabilities: np.ndarray  # n x findings, float32
    pooled: np.ndarray  # n x channels: the spatial mean of the last feature maps (what the head sees)
    cams: np.ndarray  # n x h x w x findings: ReLU(feature maps @ head kernel), Grad-CAM up to a positive factor


class Predictor:
    """A model that answers `forward`; made by `load_predictor` (ONNX Runtime) or `KerasPredictor`."""

    names: list[str]
    input_size: int
    source: str  # "onnx" or "keras", for messages and benchmarks
    note: str | None = None  # why this is not the predictor one would expect (a stale export), to tell the user

    def forward(self, images: Sequence[np.ndarray]) -> Forward:
        """Probabilities, pooled features and class activation maps of H x W uint8 gray images (any size)."""
        size = self.input_size
        batches = []
        for start in range(0, len(images), BATCH_SIZE):
            chunk = [imaging.resize(np.asarray(image), size) for image in images[start : start + BATCH_SIZE]]
            batches.append(self._run(np.stack(chunk)[..., np.newaxis].astype(np.float32)))
        if not batches:
            return Forward(np.zeros((0, len(self.names)), np.float32), np.zeros((0, 0), np.float32),
                           np.zeros((0, 0, 0, len(self.names)), np.float32))
        forward = Forward(*(np.concatenate(parts) for parts in zip(*batches, strict=True)))
        if not all(np.all(np.isfinite(part)) for part in forward):  # never shown as probabilities, never judged
            raise InputError(
                f"{self.describe()} returned non-finite outputs (NaN or infinity); its weights are damaged: "
                "restore the checkpoint and rerun `python -m pipeline export`"
            )
        return forward

    def describe(self) -> str:
        """The model file answering, for messages."""
        return str(getattr(self, "path", "the model"))

    def _run(self, x: np.ndarray) -> Forward:
        raise NotImplementedError


class OnnxPredictor(Predictor):
    """An exported model run by ONNX Runtime on the CPU."""

    source = "onnx"

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: the command line prints this project's lines
        # the bytes that are hashed are the bytes that are served: no window to swap the file in between
        content = imaging.read_regular_file(os.fspath(path))
        if hashlib.sha256(content).hexdigest() != info.get("model_sha256"):
            raise InputError(
                f"{path}: differs from the export recorded in {path.name}.json (SHA-256 mismatch: altered or "
                "damaged); rerun `python -m pipeline export`, or delete both files to answer from the checkpoint"
            )
        try:
            self._session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a corrupt file
            raise InputError(
                f"{path}: cannot load the exported model ({reason(exc)}); rerun `python -m pipeline export`"
            ) from None
        self.names = list(info["findings"])
        self.input_size = int(info["input_size"])
        self.path = path

    def _run(self, x: np.ndarray) -> Forward:
        probabilities, features, cams = self._session.run(list(OUTPUTS), {INPUT: x})
        return Forward(probabilities, features.mean(axis=(1, 2)), cams)


class KerasPredictor(Predictor):
    """The checkpoint itself in Keras (any backend): the reference, and the fallback without an export."""

    source = "keras"

    def __init__(self, model: keras.Model, path: Path | None = None) -> None:
        import keras

        from pipeline.networks import densenet as model_lib

        self.model = model
        if path is not None:
            self.path = path
        self.names = model_lib.finding_names(model)
        self.input_size = model_lib.input_size(model)
        self._function = model_lib.inference_function(model)
        self._kernel = keras.ops.convert_to_numpy(model.get_layer(model_lib.HEAD_LAYER).kernel)

    def _run(self, x: np.ndarray) -> Forward:
        features, probabilities = self._function(x)
        cams = np.maximum(features @ self._kernel, 0.0)
        return Forward(probabilities.astype(np.float32), features.mean(axis=(1, 2)), cams.astype(np.float32))


class Answer(NamedTuple):
    """Everything the command line and the Predict page show for one image."""

    probabilities: np.ndarray  # findings
    heatmaps: np.ndarray  # findings x H x W in [0, 1], at the size of the image passed in
    verdict: ood.Verdict


def analyse(
    predictor: Predictor, stats: ood.Typicality | None, decoded: Sequence[np.ndarray], heatmap_size: int | None = None
) -> list[Answer]:
    """Probabilities, Grad-CAM heatmaps and the out-of-distribution verdict of decoded images, one pass each.

    ``decoded`` are `pipeline.data.imaging.load_decoded` arrays; the heatmaps are at each image's own size, or
    ``heatmap_size`` square when given (the page keeps them small and lets `gradcam.overlay` scale them).
    """
    grays = [imaging.to_gray(image) for image in decoded]
    forward = predictor.forward(grays)
    answers = []
    for i, (image, gray) in enumerate(zip(decoded, grays, strict=True)):
        shape = gray.shape if heatmap_size is None else (heatmap_size, heatmap_size)
        verdict = ood.judge(image, gray, forward.pooled[i : i + 1], stats)
        answers.append(Answer(forward.probabilities[i], maps_from_cams(forward.cams[i], shape), verdict))
    return answers


def maps_from_cams(cams: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Heatmaps ``[n_findings, H, W]`` in [0, 1] from class activation maps ``h x w x n_findings``."""
    return np.stack([to_heatmap(cam, shape) for cam in np.moveaxis(np.asarray(cams), -1, 0)])


def to_heatmap(cam: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize a coarse map to ``shape[:2]`` and scale it to [0, 1]; an all-zero map stays zero."""
    height, width = shape[:2]
    cam = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    peak = float(cam.max())
    return np.clip(cam / peak, 0.0, 1.0) if peak > 0 else np.zeros((height, width), np.float32)


def flag_paths(
    checkpoint: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], predictor: Predictor | None = None
) -> dict[str, str]:
    """``{path: reason}`` for the readable images the run's guard flags as out of distribution.

    Without typicality statistics beside the checkpoint only the pixel checks run (no model is loaded);
    with them, ``predictor`` (default: `load_predictor`) computes the features, a batch at a time.
    Unreadable files are skipped: the caller reports those itself.
    """
    stats = ood.load(Path(checkpoint).parent)
    if stats is not None and predictor is None:
        predictor = load_predictor(checkpoint)
    flagged: dict[str, str] = {}
    for start in range(0, len(paths), BATCH_SIZE):
        batch: list[tuple[str, np.ndarray]] = []
        for path in paths[start : start + BATCH_SIZE]:
            try:
                batch.append((os.fspath(path), imaging.load_decoded(path)))
            except InputError:
                continue
        grays = [imaging.to_gray(decoded) for _, decoded in batch]
        pooled = predictor.forward(grays).pooled if stats is not None and predictor is not None else None
        for i, ((path, decoded), gray) in enumerate(zip(batch, grays, strict=True)):
            verdict = ood.judge(decoded, gray, None if pooled is None else pooled[i : i + 1], stats)
            if not verdict.in_distribution:
                flagged[path] = str(verdict.reason)
    return flagged


def add_serving_artifacts(
    run_dir: str | os.PathLike[str],
    model: keras.Model,
    train_images: Sequence[str | os.PathLike[str] | np.ndarray],
    valid_images: Sequence[str | os.PathLike[str] | np.ndarray],
    checkpoint: str | os.PathLike[str] | None = None,
    max_images: int = MAX_STATS_IMAGES,
) -> dict[str, Any]:
    """Export ``model`` beside its checkpoint and store the run's typicality statistics; returns a summary.

    Called at the end of training (``model`` is the best checkpoint, loaded) and by
    ``python -m pipeline export`` for existing runs. ``train_images`` / ``valid_images`` are the image files
    the run was trained / validated on (or, from a prepared folder, the H x W uint8 images themselves); at
    most ``max_images`` of each, evenly spaced, are read, a batch at a time, so a full-dataset run costs
    minutes and little memory. The features come from the export itself, so the statistics describe exactly
    what is served. ``checkpoint`` defaults to ``run_dir/best.keras``.
    """
    run_dir = Path(run_dir)
    checkpoint = Path(checkpoint) if checkpoint is not None else run_dir / "best.keras"
    model_path = export(model, checkpoint)
    predictor = load_predictor(checkpoint)
    if not isinstance(predictor, OnnxPredictor):
        raise RuntimeError(f"{model_path}: the export just written is not served; check {checkpoint}")
    train_paths, valid_paths = _evenly(train_images, max_images), _evenly(valid_images, max_images)
    train_pooled, train_polarity = _statistics_inputs(predictor, train_paths)
    valid_pooled, _ = _statistics_inputs(predictor, valid_paths)
    stats = ood.fit(train_pooled, valid_pooled, train_polarity)
    inverted = train_polarity[:, 0] @ stats.polarity_weights + stats.polarity_bias > 0
    info = {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_of(checkpoint),
        "train_images": len(train_paths),
        "valid_images": len(valid_paths),
        "valid_pass_rate": float(np.mean(stats.score(valid_pooled) >= 1.0)),
        "train_images_inverted": [
            _name(path, i) for i, (path, flag) in enumerate(zip(train_paths, inverted, strict=True)) if flag
        ],
    }
    ood.save(stats, run_dir, info)
    return {"export": str(model_path), "threshold": stats.threshold, **info}


def _evenly(paths: Sequence[str | os.PathLike[str]], limit: int) -> list[str | os.PathLike[str]]:
    """At most ``limit`` of ``paths``, evenly spaced (all of them when there are fewer)."""
    if len(paths) <= limit:
        return list(paths)
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, limit).round()]


def _statistics_inputs(predictor: Predictor, paths: Sequence[str | os.PathLike[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (n x channels) and `ood.polarity_pair` (n x 2 x features) of image files, a batch at a time."""
    pooled, pairs = [], []
    for start in range(0, len(paths), BATCH_SIZE):
        grays = [_gray(path) for path in paths[start : start + BATCH_SIZE]]
        pooled.append(predictor.forward(grays).pooled)
        pairs += [ood.polarity_pair(gray) for gray in grays]
    if not pooled:
        raise InputError("no images to compute the typicality statistics from; give the run's training images")
    return np.concatenate(pooled), np.stack(pairs)


def _gray(image: str | os.PathLike[str] | np.ndarray) -> np.ndarray:
    return image if isinstance(image, np.ndarray) else imaging.load_image(image)


def _name(image: str | os.PathLike[str] | np.ndarray, index: int) -> str:
    return f"image {index} of the sample" if isinstance(image, np.ndarray) else str(image)


def export_paths(checkpoint: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where the export of ``checkpoint`` lives: ``<stem>.onnx`` and its ``<stem>.onnx.json`` beside it."""
    checkpoint = Path(checkpoint)
    model_path = checkpoint.with_suffix(".onnx")
    return model_path, model_path.with_name(model_path.name + ".json")


def export(model: keras.Model, checkpoint: str | os.PathLike[str]) -> Path:
    """Export ``model`` (loaded from ``checkpoint``) to ONNX beside the checkpoint; returns the model path.

    The preprocessing constants are frozen into the graph (a plain tf2onnx conversion of the Keras model
    leaves them as extra graph inputs), so the export takes the same raw 0-255 gray image as the model.
    Both files are written atomically; the JSON records the checkpoint's SHA-256 so a stale export is
    never served.
    """
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from pipeline.networks import densenet as model_lib

    checkpoint = Path(checkpoint)
    size = model_lib.input_size(model)
    submodel = keras.Model(
        model.input, [model.get_layer(model_lib.HEAD_LAYER).output, model.get_layer(model_lib.CAM_LAYER).output]
    )
    kernel = tf.constant(keras.ops.convert_to_numpy(model.get_layer(model_lib.HEAD_LAYER).kernel))

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32, name=INPUT)])
    def serve(image):
        probabilities, features = submodel(image, training=False)
        cams = tf.nn.relu(tf.einsum("bijc,ck->bijk", features, kernel))
        return probabilities, features, cams

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    proto, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs],
        opset=OPSET,
    )
    _rename(proto, [t.name for t in frozen.inputs], [INPUT])
    _rename(proto, [t.name for t in frozen.outputs], list(OUTPUTS))
    extra = [i.name for i in proto.graph.input if i.name != INPUT]
    if extra:  # the constants must be inside the graph; never ship a model that needs them fed
        raise RuntimeError(f"export left graph inputs besides {INPUT!r}: {extra}")

    model_path, info_path = export_paths(checkpoint)
    tmp = model_path.with_name(f".{model_path.name}.{os.getpid()}.tmp")
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, model_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    info = {
        "format": FORMAT,
        "opset": OPSET,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_of(checkpoint),
        "model_sha256": sha256_of(model_path),
        "input_size": size,
        "findings": model_lib.finding_names(model),
        "input": f"{INPUT}: float32 [batch, {size}, {size}, 1], raw gray levels 0-255",
        "outputs": {
            "probabilities": "float32 [batch, findings]",
            "features": f"float32 [batch, h, w, channels]: the {model_lib.CAM_LAYER!r} layer",
            "cams": "float32 [batch, h, w, findings]: ReLU(features @ head kernel)",
        },
        "versions": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__},
    }
    write_json_atomic(info, info_path)
    return model_path


def exported(checkpoint: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The export of ``checkpoint`` and its info, or None when there is none or it was made from other weights."""
    found = _export_or_why(Path(checkpoint))
    return found if isinstance(found, tuple) else None


def read_export_info(info_path: Path) -> dict[str, Any] | str:
    """An export's info file (``<stem>.onnx.json``), or why it cannot be used (a note)."""
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        return f"{info_path.name} is unreadable ({reason(exc)})"
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return f"{info_path.name} does not describe an {FORMAT} export"
    return info


def _export_or_why(checkpoint: Path) -> tuple[Path, dict[str, Any]] | str | None:
    """The current export and its info; else why an export there is not served (a note), or None without one."""
    model_path, info_path = export_paths(checkpoint)
    if not (model_path.exists() or info_path.exists()):
        return None
    if not (model_path.is_file() and info_path.is_file()):
        return f"the export is incomplete ({model_path.name} and {info_path.name} go together)"
    info = read_export_info(info_path)
    if isinstance(info, str):
        return info
    if info.get("checkpoint_sha256") != sha256_cached(checkpoint):
        return f"{model_path.name} was exported from other weights than {checkpoint.name} (stale)"
    return model_path, info


def load_predictor(checkpoint: str | os.PathLike[str], use_export: bool = True) -> Predictor:
    """The export of ``checkpoint`` in ONNX Runtime when it is current, else the checkpoint in Keras.

    An export whose bytes differ from the hash recorded at export is refused (`InputError`), never served and
    never silently replaced; a stale or incomplete one falls back to the checkpoint with ``note`` saying so.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint}: checkpoint not found; give a .keras checkpoint written by `train`")
    found = _export_or_why(checkpoint) if use_export else None
    if isinstance(found, tuple):
        return OnnxPredictor(*found)
    from pipeline.networks import densenet as model_lib

    predictor = KerasPredictor(model_lib.load(checkpoint), checkpoint)
    if found is not None:
        predictor.note = (f"{found}: answering from {checkpoint.name} in TensorFlow (slower); "
                          "rerun `python -m pipeline export` on the run to serve the export again")
    return predictor


def _rename(proto: Any, old: list[str], new: list[str]) -> None:
    """Rename graph inputs / outputs (tf2onnx keeps TensorFlow's ``Identity:0``-style names)."""
    mapping = dict(zip(old, new, strict=True))
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.name = mapping.get(value.name, value.name)
    for node in proto.graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
