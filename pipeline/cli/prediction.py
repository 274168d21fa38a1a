"""The `predict` command: probabilities per image on stdout, Grad-CAM overlays as PNG files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import InputError


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `predict` to the top-level parser."""
    p = commands.add_parser("predict", help="14 probabilities (and Grad-CAM overlays) per image")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG or DICOM files")
    p.add_argument("--checkpoint", required=True, type=Path, help="a .keras file, or a run folder with best.keras")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--gradcam", type=Path, metavar="DIR", help="write Grad-CAM overlays here")
    p.add_argument("--top", type=int, default=3, help="overlays for this many top findings (default 3)")
    p.add_argument("--conformal", type=Path, metavar="EVAL_DIR",
                   help="evaluation folder whose conformal.json gives the three answers (default: the run's eval-test)")
    p.set_defaults(func=run_predict)

    p = commands.add_parser("export", help="add the ONNX export and typicality statistics to a run")
    p.add_argument("--run", required=True, type=Path, help="run folder with best.keras")
    p.add_argument("--train", required=True, type=Path, help="the run's training labels, or its prepared folder")
    p.add_argument("--valid", required=True, type=Path, help="the run's validation labels, or its prepared folder")
    p.add_argument("--images", type=Path, help="image folder of the label files (not needed for prepared folders)")
    p.set_defaults(func=run_export)


def run_predict(args: argparse.Namespace) -> int:
    """Print the probabilities of each image, optionally write Grad-CAM overlays.

    Output per image: a block of 14 ``finding  probability`` rows, or with ``--json`` one line
    ``{"image": path, "probabilities": {finding: p}, "in_distribution": bool, "typicality": t}`` (plus
    ``"ood_reason"`` when not in distribution and ``"gradcam": {finding: png}`` with ``--gradcam``), plus
    ``"conformal"`` when the run has conformal thresholds (`_conformal_record`).
    ``--gradcam DIR`` writes ``DIR/<name>_<finding>.png`` overlays of the ``--top`` most probable findings (at
    the image's size, or shrunk to `pipeline.explain.gradcam.OVERLAY_SIDE` px on the longer side),
    with names made unique across the batch (`pipeline.inference.predict.overlay_stems`). Answers come from the run's
    export when it is current (no TensorFlow). Returns 0 when every image was predicted, 2 when some could
    not be read (each reason is on stderr and the readable images are still predicted).
    """
    from pipeline.cli import warn
    from pipeline.data import imaging
    from pipeline.explain import gradcam
    from pipeline.inference import ood, predict, serving

    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")
    predictor = serving.load_predictor(args.checkpoint)
    stats = ood.load(Path(args.checkpoint).parent)
    if predictor.note is not None:
        warn(predictor.note)
    if stats is None:  # never pass an image with fewer checks than usual without saying so
        why = ood.unavailable(args.checkpoint.parent)
        warn(f"only the pixel checks guard these images, no typicality check: {why}")
    guarantees = _guarantees(args.checkpoint, args.conformal)
    if guarantees is not None and guarantees.note is not None:
        warn(f"conformal {guarantees.note}")
    names = predictor.names
    thresholds, threshold_note = run_thresholds(Path(args.checkpoint))
    if not args.json:
        print(threshold_note, flush=True)
    if args.gradcam is not None:
        try:
            args.gradcam.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--gradcam {args.gradcam}: cannot create the folder ({exc.strerror})") from None

    failed = 0
    for path, stem in zip(args.images, predict.overlay_stems(args.images), strict=True):
        try:
            decoded = imaging.load_decoded(path)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        # heatmaps at the model's size and overlays at most `gradcam.OVERLAY_SIDE`: memory stays bounded
        answer = serving.analyse(predictor, stats, [decoded], heatmap_size=predictor.input_size)[0]
        overlays: dict[str, str] = {}
        if args.gradcam is not None:
            gray = gradcam.bounded(imaging.to_gray(decoded))
            for k in np.argsort(-answer.probabilities, kind="stable")[: args.top]:
                out = args.gradcam / f"{stem}_{names[k]}.png"
                gradcam.write_overlay(gradcam.overlay(gray, answer.heatmaps[k]), out)
                overlays[names[k]] = str(out)
        if args.json:
            text = _json_line(path, names, answer.probabilities, overlays, answer.verdict)
        else:
            text = format_answer(path, names, answer.probabilities, thresholds, overlays, answer.verdict)
        if guarantees is not None:
            text = _with_answers(text, guarantees, names, answer.probabilities, answer.verdict, args.json)
        print(text, flush=True)
    return 2 if failed else 0


def run_export(args: argparse.Namespace) -> int:
    """Add the inference export and the typicality statistics to a run folder; print what was written."""
    from pipeline.cli import warn
    from pipeline.data import input_pipeline
    from pipeline.inference import serving
    from pipeline.networks import densenet
    from pipeline.training import run_folder

    checkpoint = args.run / "best.keras"
    sources = [input_pipeline.open_source(path, args.images) for path in (args.train, args.valid)]
    # the typicality threshold is fitted to these images: another run's labels would silently move it
    unchecked = run_folder.check_same_data(args.run, sources[0].sha256, sources[1].sha256, "export")
    if unchecked is not None:
        warn(unchecked)
    net = densenet.load(checkpoint)
    images = [input_pipeline.sample(source, serving.MAX_STATS_IMAGES, densenet.input_size(net)) for source in sources]
    summary = serving.add_serving_artifacts(args.run, net, images[0], images[1], checkpoint)
    print(json.dumps(summary, indent=2))
    return 0


def run_thresholds(checkpoint: Path) -> tuple[dict[str, float], str]:
    """The operating thresholds of the checkpoint's run (its headline evaluation, as the dashboard), and a line
    saying where they come from; none when the run has no readable evaluation or it evaluated other weights
    (`pipeline.evaluation.provenance`)."""
    from pipeline.cli import warn
    from pipeline.core.errors import InputError
    from pipeline.evaluation import provenance, results
    from pipeline.training import runs

    evaluation = runs.headline_evaluation(runs.run_evaluations(checkpoint.parent))
    if evaluation is None:
        return {}, "no evaluation of this run, so no operating thresholds: nothing is marked positive"
    try:
        summary = results.read_metrics(evaluation)
    except InputError as exc:
        warn(f"the run's evaluation cannot be read, so no finding is marked positive ({exc})")
        return {}, "no readable evaluation of this run, so no operating thresholds: nothing is marked positive"
    matched = provenance.match(evaluation, checkpoint)
    if not matched.ok:
        return {}, f"no operating thresholds, nothing is marked positive: {matched.note}"
    where = matched.note or f"thresholds from {evaluation}"  # the note says when they match by file name only
    note = (f"{where} ({summary.threshold_source.describe(summary.target_sensitivity)}); "
            "POSITIVE: the probability reaches the finding's threshold")
    return summary.thresholds, note


def format_answer(
    path: Path,
    names: list[str],
    probabilities: np.ndarray,
    thresholds: dict[str, float],
    overlays: dict[str, str],
    verdict: Any,
) -> str:
    """One image's text block: findings by falling probability (as the dashboard), each with its operating
    threshold and POSITIVE where the probability reaches it; columns are built here only."""
    width = max(len(name) for name in [*names, "finding"])
    head = str(path)
    if not verdict.in_distribution:
        head = f"{path}  [OUT OF DISTRIBUTION: {verdict.reason}; the probabilities below are not meaningful]"
    lines = [head, f"  {'finding':<{width}}  {'prob':>6}  {'thresh':>6}"]
    for k in np.argsort(-probabilities, kind="stable"):
        name, p = names[k], float(probabilities[k])
        limit = thresholds.get(name)
        row = f"  {name:<{width}}  {p:6.3f}  {'-' if limit is None else f'{limit:.3f}':>6}"
        if limit is not None and p >= limit:
            row += "  POSITIVE"
        lines.append(row)
    lines += [f"  Grad-CAM {name}: {out}" for name, out in overlays.items()]
    return "\n".join(lines) + "\n"


def _json_line(path: Path, names: list[str], probabilities: np.ndarray, overlays: dict[str, str], verdict: Any) -> str:
    scores = {name: round(float(p), 6) for name, p in zip(names, probabilities, strict=True)}
    record = {"image": str(path), "probabilities": scores, "in_distribution": verdict.in_distribution,
              "typicality": verdict.typicality}
    if not verdict.in_distribution:
        record["ood_reason"] = verdict.reason
    if overlays:
        record["gradcam"] = overlays
    return json.dumps(record, allow_nan=False)


# --- conformal answers (issue 19) ------------------------------------------------------------------------------


def _guarantees(checkpoint: Path, eval_dir: Path | None) -> Any:
    """The guarantees answers are given with (`conformal.Found`): ``--conformal``, which must have evaluated the
    same weights (else a one-line error), else the run's own evaluation of them, else None."""
    from pipeline.evaluation import conformal

    if eval_dir is not None:
        return conformal.load_for(eval_dir, checkpoint)
    return conformal.find_for_checkpoint(checkpoint)


def _conformal_record(guarantees: Any, names: list[str], probabilities: np.ndarray,
                      verdict: Any) -> dict[str, Any]:
    """``{"evaluation", "matched_by", "calibration", "calibration_images", "miss_rate", "false_alarm_rate",
    "answers": {finding: answer}, "guarantees": {finding: words}, "image_set": [findings not ruled out at image
    level] or null, "image_set_guarantee": words}``; ``matched_by`` is ``"sha256"`` (the evaluation scored these
    weights) or ``"file name"`` (an older evaluation); for an out-of-distribution image ``answers`` is null and
    ``reason`` says why."""
    from pipeline.evaluation import conformal

    folder, found, note = guarantees
    record: dict[str, Any] = {"evaluation": str(folder), "matched_by": "sha256" if note is None else "file name",
                              "calibration": found.calibration,
                              "calibration_images": found.calibration_images, "miss_rate": found.miss_rate,
                              "false_alarm_rate": found.false_alarm_rate}
    if not verdict.in_distribution:
        return {**record, "answers": None, "reason": conformal.OOD_REASON.format(verdict.reason)}
    scores = dict(zip(names, probabilities.tolist(), strict=True))
    given = conformal.answers(found, scores)
    return {**record, "answers": {f: a.value for f, a in given.items()},
            "guarantees": {f: conformal.guarantee_text(found, f, a) for f, a in given.items()},
            "image_set": conformal.image_set(found, scores), "image_set_guarantee": conformal.image_set_text(found)}


def _with_answers(text: str, guarantees: Any, names: list[str], probabilities: np.ndarray,
                  verdict: Any, as_json: bool) -> str:
    """The image's output with its conformal answers: a ``conformal`` entry in JSON, a block of lines in text."""
    record = _conformal_record(guarantees, names, probabilities, verdict)
    if as_json:
        return json.dumps({**json.loads(text), "conformal": record}, allow_nan=False)
    head = (f"  conformal answers (miss rate <= {record['miss_rate']:g}, false alarms <= "
            f"{record['false_alarm_rate']:g}; calibrated on {record['calibration']}, "
            f"{record['calibration_images']} images):")
    if record["answers"] is None:
        return text.rstrip("\n") + f"\n  conformal answers: none; {record['reason']}\n"
    lines = [head]
    for label in ("flagged", "uncertain", "ruled out"):
        chosen = [f for f, a in record["answers"].items() if a == label]
        lines.append(f"    {label}: {', '.join(chosen) if chosen else '-'}")
    if record["image_set"] is not None:
        lines.append(f"    image-level set: {', '.join(record['image_set']) or '-'} ({record['image_set_guarantee']})")
    return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
