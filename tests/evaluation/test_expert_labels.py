"""Expert labels (Google 2019): the file as shipped, the mapping to NIH findings, AUCs and disagreement."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import NIH

from pipeline.cli import main
from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.data import label_files
from pipeline.evaluation import expert_labels


def test_shipped_file_known_truths():
    expert = expert_labels.load_expert_labels()
    assert len(expert) == 4376 and expert["Image"].is_unique
    assert list(expert.columns) == ["Image", "Pneumothorax", "Nodule or mass", "Airspace opacity"]
    assert expert[["Pneumothorax", "Nodule or mass", "Airspace opacity"]].sum().tolist() == [238, 605, 2166]
    embedded = {p.name for p in (NIH / "images").glob("*.png")}
    assert len(set(expert["Image"]) & embedded) == 7  # the README's count
    assert not set(expert["Image"]) & {p.name for p in (NIH / "boxed").glob("*.png")}


def canonical(rows: dict[str, list[str]]) -> pd.DataFrame:
    """A canonical label table from {image: [findings]}."""
    table = pd.DataFrame({"Image": list(rows), "PatientId": range(len(rows))})
    for finding in FINDINGS:
        table[finding] = [int(finding in found) for found in rows.values()]
    return table


def test_mapping_on_a_hand_made_table():
    labels = canonical({"a": ["Mass"], "b": ["Nodule", "Infiltration"], "c": ["Pneumonia"], "d": [],
                        "e": ["Pneumothorax", "Consolidation"]})
    grouped = expert_labels.group_columns(labels).set_index("Image")
    assert grouped.loc["a"].tolist() == [0, 1, 0]  # Pneumothorax, Nodule or mass, Airspace opacity
    assert grouped.loc["b"].tolist() == [0, 1, 1]
    assert grouped.loc["c"].tolist() == [0, 0, 1]
    assert grouped.loc["d"].tolist() == [0, 0, 0]
    assert grouped.loc["e"].tolist() == [1, 0, 1]
    scores = labels[["Image"]].copy()
    for j, finding in enumerate(FINDINGS):
        scores[finding] = 0.01 * (j + 1)
    scores.loc[0, "Mass"], scores.loc[0, "Nodule"] = 0.9, 0.2
    grouped_scores = expert_labels.group_columns(scores).set_index("Image")
    assert grouped_scores.loc["a", "Nodule or mass"] == 0.9  # the larger of Nodule and Mass
    # the largest of Consolidation (0.03), Infiltration (0.09) and Pneumonia (0.13)
    assert grouped_scores.loc["b", "Airspace opacity"] == pytest.approx(0.13)


def test_auc_and_disagreement_against_expert_and_nih_labels(tmp_path):
    nih = canonical({"a": ["Pneumothorax"], "b": [], "c": ["Pneumothorax"], "d": [], "e": ["Mass"], "f": []})
    expert_file = tmp_path / "expert.csv"
    expert_file.write_text(
        "Image Index,Fracture,Pneumothorax,Airspace opacity,Nodule or mass\n"
        "a,NO,YES,NO,NO\nb,YES,YES,NO,no\nc,NO,NO,YES,NO\nd,NO,NO,NO,NO\ne,NO,NO,NO,YES\nf,NO,NO,YES,YES\n"
        "zz,NO,YES,YES,YES\n"  # not labelled by NIH here: ignored
    )
    expert = expert_labels.load_expert_labels(expert_file)
    predictions = nih[["Image"]].copy()
    for finding in FINDINGS:
        predictions[finding] = 0.1
    predictions["Pneumothorax"] = [0.9, 0.8, 0.3, 0.1, 0.2, 0.4]
    summary, per_image = expert_labels.score(nih, predictions, expert, n_bootstrap=200)
    assert summary["n_images"] == 6 and list(per_image["Image"]) == list("abcdef")
    pneumothorax = summary["findings"]["Pneumothorax"]
    assert pneumothorax["expert"]["positives"] == 2 and pneumothorax["nih"]["positives"] == 2
    assert pneumothorax["expert"]["auc"] == 1.0  # a 0.9, b 0.8 above every expert negative
    assert pneumothorax["nih"]["auc"] == pytest.approx(6 / 8)  # c (0.3) is beaten by b (0.8) and f (0.4)
    assert pneumothorax["agreement"] == {"both_positive": 1, "nih_only": 1, "expert_only": 1, "both_negative": 3,
                                         "disagree_share": pytest.approx(2 / 6)}
    nodule = summary["findings"]["Nodule or mass"]["agreement"]
    assert (nodule["both_positive"], nodule["expert_only"]) == (1, 1)
    assert expert_labels.agreement_frame(summary)["finding"].tolist() == list(expert_labels.MAPPING)
    assert "Fracture" in summary["skipped_findings"]


def test_bad_expert_files_give_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        expert_labels.load_expert_labels(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("Image Index,Pneumothorax,Airspace opacity,Nodule or mass\na,MAYBE,NO,NO\n")
    with pytest.raises(InputError, match="row 2 has 'MAYBE'; expected YES or NO"):
        expert_labels.load_expert_labels(bad)
    bad.write_text("Image Index,Pneumothorax\na,NO\n")
    with pytest.raises(InputError, match="missing column 'Nodule or mass'"):
        expert_labels.load_expert_labels(bad)


def test_evaluate_reference_on_the_embedded_images(small_checkpoint, tmp_path, capsys):
    """The 7 embedded images with expert labels, predicted by a real model: one command, a complete result."""
    out = tmp_path / "ref"
    assert main(["evaluate", "--reference", "google2019", "--checkpoint", str(small_checkpoint), "--labels",
                 str(NIH / "sample_labels.csv"), "--images", str(NIH / "images"), "--out", str(out),
                 "--bootstrap", "100"]) == 0
    summary = json.loads((out / "reference.json").read_text())
    assert summary["n_images"] == 7 and summary["reference_sha256"]
    table = pd.read_csv(out / "reference-images.csv")
    assert len(table) == 7 and table.filter(like="score").stack().between(0, 1).all()
    printed = capsys.readouterr().out
    assert "7 images with expert labels" in printed and "disagree" in printed
    labels = label_files.load_labels(NIH / "sample_labels.csv")
    nih_positives = expert_labels.group_columns(labels[labels["Image"].isin(table["Image"])]).sum(numeric_only=True)
    for finding, entry in summary["findings"].items():
        assert entry["nih"]["positives"] == nih_positives[finding]
        assert entry["expert"]["positives"] == int(table[f"{finding} expert"].sum())
        counts = entry["agreement"]
        assert sum(counts[k] for k in ("both_positive", "nih_only", "expert_only", "both_negative")) == 7

    assert main(["evaluate", "--reference", "google2019", "--checkpoint", str(small_checkpoint), "--labels",
                 str(NIH / "train-small.csv"), "--images", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train-small.csv" in err and len(err.strip().splitlines()) == 1  # its 5 refereed images are not there
    no_overlap = tmp_path / "labels.csv"
    label_files.to_course_format(labels[~labels["Image"].isin(table["Image"])].head(5)).to_csv(no_overlap, index=False)
    assert main(["evaluate", "--reference", "google2019", "--predictions", str(tmp_path / "x.csv"), "--labels",
                 str(no_overlap), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of its images has an expert label" in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", "--reference", "google2019", "--predictions", str(tmp_path / "x.csv"), "--labels",
                 str(no_overlap), "--out", str(out), "--valid-labels", str(no_overlap)]) == 2
    assert "--valid-labels has no part in --reference" in capsys.readouterr().err
