"""The subgroup and underdiagnosis audit: known answers on constructed scores, real counts on the NIH test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import METADATA, TEST_LABELS

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.data import label_files
from pipeline.evaluation import metrics, results, subgroups

THRESHOLDS = dict.fromkeys(FINDINGS, 0.5)


def constructed(n_per_sex: int = 1000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NIH-style labels (own Sex, Age, View) and scores with known rates on Atelectasis, the only finding present.

    Women: sensitivity 0.9, false-positive rate 0.1; men: sensitivity 0.6, false-positive rate 0.3. Half of each
    sex is positive. Every other finding is absent and scored 0, so "abnormal" is Atelectasis.
    """
    rows, scores = [], []
    for sex, sensitivity, fpr in (("F", 0.9, 0.1), ("M", 0.6, 0.3)):
        half = n_per_sex // 2
        hit = np.arange(half) < round(sensitivity * half)
        false_alarm = np.arange(half) < round(fpr * half)
        for positive, called in ((1, hit), (0, false_alarm)):
            for k, call in enumerate(called):
                rows.append({"Image": f"{sex}{positive}_{k:05d}.png", "PatientId": f"{sex}{positive}{k}",
                             "Sex": sex, "Age": 20 + k % 60, "View": "PA" if k % 2 else "AP", "Atelectasis": positive})
                scores.append(0.8 if call else 0.2)
    labels = pd.DataFrame(rows)
    for finding in FINDINGS[1:]:
        labels[finding] = 0
    labels = labels[["Image", "PatientId", *FINDINGS, "View", "Age", "Sex"]]
    predictions = pd.DataFrame({"Image": labels["Image"], **{f: 0.0 for f in FINDINGS}})
    predictions["Atelectasis"] = scores
    return labels, predictions


def run_audit(labels, predictions, **options):
    meta, source = subgroups.attach_metadata(labels)
    return subgroups.audit(labels, predictions, THRESHOLDS, meta, metadata=source, **options)


def test_constructed_sensitivities_rates_and_gaps_are_reported_exactly_with_covering_intervals():
    labels, predictions = constructed()
    audit = run_audit(labels, predictions, n_bootstrap=300)
    women, men = audit.group("sex", "female"), audit.group("sex", "male")
    assert (women.n_images, men.n_images) == (1000, 1000)
    for group, sensitivity, fpr, gap in ((women, 0.9, 0.1, 0.3), (men, 0.6, 0.3, -0.3)):
        cell = group.findings["Atelectasis"]
        assert (cell.n_positive, cell.n_negative) == (500, 500)
        assert cell.sensitivity.value == pytest.approx(sensitivity)
        assert cell.sensitivity.gap == pytest.approx(gap)
        low, high = cell.sensitivity.gap_ci
        assert low <= gap <= high and not low <= 0 <= high  # covers the construction, excludes no gap
        assert cell.sensitivity.ci[0] <= sensitivity <= cell.sensitivity.ci[1]
        assert cell.fpr.value == pytest.approx(fpr)
        assert cell.fpr.gap == pytest.approx(-gap * 2 / 3)  # 0.1 - 0.3 and 0.3 - 0.1
        assert cell.fpr.gap_ci[0] <= cell.fpr.gap <= cell.fpr.gap_ci[1]
        # underdiagnosis: positives called normal, 1 - sensitivity; its gap the negated sensitivity gap
        assert group.underdiagnosis.value == pytest.approx(1 - sensitivity)
        assert group.underdiagnosis.gap == pytest.approx(-gap)
        assert group.underdiagnosis.gap_ci[0] <= -gap <= group.underdiagnosis.gap_ci[1]
        assert group.overdiagnosis.value == pytest.approx(fpr)
        assert group.n_abnormal == 500 and group.n_normal == 500


def test_the_model_says_normal_rule_is_no_finding_at_or_above_its_threshold():
    scores = np.zeros((3, len(FINDINGS)))
    scores[1, 5] = 0.5  # exactly at the threshold: called
    scores[2, 5] = 0.4999
    assert subgroups.model_says_normal(scores, [0.5] * len(FINDINGS)).tolist() == [True, False, True]


def test_group_aucs_on_resamples_equal_the_plain_bootstrap_when_one_group_holds_every_image():
    rng = np.random.default_rng(3)
    y = (rng.random(80) < 0.3).astype(int)
    s = np.round(rng.random(80) * 0.5 + 0.4 * y, 2)
    expected = metrics.bootstrap_auc(y[:, None], s[:, None], 120, seed=4)[:, 0]
    got = np.concatenate([metrics.grouped_bootstrap_auc(y, s, np.zeros(80, int), 1, r)[:, 0]
                          for r in metrics.resample_indices(80, 120, 4)])
    np.testing.assert_allclose(got, expected)
    # two groups: each group's AUC on the full data (identity resample) is its plain AUC
    group = np.arange(80) % 2
    both = metrics.grouped_bootstrap_auc(y, s, group, 2, np.arange(80)[None])[0]
    assert both[0] == pytest.approx(metrics.roc_auc(y[group == 0], s[group == 0]))
    assert both[1] == pytest.approx(metrics.roc_auc(y[group == 1], s[group == 1]))


@pytest.fixture(scope="module")
def test_split_audit():
    labels = label_files.load_labels(TEST_LABELS)  # course format: no age, sex or view of its own
    predictions = labels[["Image"]].assign(**{f: np.linspace(0, 1, len(labels)) for f in FINDINGS})
    return labels, run_audit(labels, predictions, n_bootstrap=50)


def test_counts_on_the_test_split_equal_an_independent_count_from_the_metadata(test_split_audit):
    labels, audit = test_split_audit
    meta = pd.read_csv(METADATA).set_index("Image Index").loc[labels["Image"]]
    y = labels.set_index("Image")[list(FINDINGS)]
    ages = pd.cut(meta["Patient Age"], [0, 20, 40, 60, 80, 101], right=False, labels=subgroups.age_group_names(
        subgroups.DEFAULT_AGE_EDGES))
    columns = {"sex": meta["Patient Gender"].map(subgroups.SEXES), "age": ages.astype(str),
               "view": meta["View Position"]}
    columns["sex x age"] = columns["sex"] + " " + columns["age"]
    for group in audit.groups:
        members = meta.index[(columns[group.attribute] == group.name).to_numpy()]
        assert group.n_images == len(members), (group.attribute, group.name)
        for finding in FINDINGS:
            assert group.findings[finding].n_positive == int(y.loc[members, finding].sum())
        assert group.n_abnormal == int(y.loc[members].any(axis=1).sum())
    assert sum(g.n_images for g in audit.groups if g.attribute == "sex") == len(labels) == audit.n_images
    assert audit.left_out == {key: [] for key in audit.left_out}
    assert any("far too few for conclusions" in note for note in audit.notes)


def test_small_groups_say_too_few_instead_of_a_number(test_split_audit):
    _, audit = test_split_audit
    seen = {True: 0, False: 0}
    for group in audit.groups:
        for cell in group.findings.values():
            for rate, count in ((cell.sensitivity, cell.n_positive), (cell.fpr, cell.n_negative)):
                few = count < audit.min_count
                assert (rate.too_few is not None) == few and (rate.value is None) == few
                seen[few] += 1
            few = min(cell.n_positive, cell.n_negative) < audit.min_count
            assert (cell.auc.value is None) == few and (cell.auc.too_few is not None) == few
        few = group.n_abnormal < audit.min_count
        assert (group.underdiagnosis.value is None) == few
        assert not few or group.underdiagnosis.too_few.startswith("too few: ")
    assert seen[True] and seen[False]  # both sides of the rule occur on the 55 images
    assert audit.group("age", "80+").n_images == 1 and audit.group("age", "80+").underdiagnosis.value is None


def test_an_image_without_metadata_is_counted_and_named_and_in_no_group():
    labels = label_files.load_labels(TEST_LABELS).head(20)
    stranger = labels.iloc[[0]].assign(Image="99999999_000.png", PatientId="99999999")
    labels = pd.concat([labels, stranger], ignore_index=True)
    predictions = labels[["Image"]].assign(**dict.fromkeys(FINDINGS, 0.3))
    audit = run_audit(labels, predictions, n_bootstrap=20)
    assert audit.left_out["no_metadata"] == ["99999999_000.png"]
    assert [n for n in audit.notes if "99999999_000.png" in n] == [
        "1 of 21 images have no entry in the NIH metadata and are in no subgroup: 99999999_000.png"]
    for attribute in ("sex", "age", "view"):
        assert sum(g.n_images for g in audit.groups if g.attribute == attribute) == 20


def test_ages_over_100_and_missing_views_are_reported_and_left_out_of_their_groups_only():
    labels, predictions = constructed(40)
    labels.loc[0, "Age"] = 148
    labels.loc[1, "View"] = np.nan
    labels.loc[2, "View"] = "LL"  # not a frontal PA or AP view
    labels.loc[3, "Age"] = -2  # in no age group: reported, not silently dropped
    audit = run_audit(labels, predictions, n_bootstrap=10)
    first, second, third, fourth = labels["Image"][:4]
    assert audit.left_out["age_over_100"] == [first]
    assert audit.left_out["no_view"] == [second, third]
    assert audit.left_out["no_age"] == [fourth]
    assert sum(g.n_images for g in audit.groups if g.attribute == "age") == 78
    assert sum(g.n_images for g in audit.groups if g.attribute == "sex x age") == 78
    assert sum(g.n_images for g in audit.groups if g.attribute == "view") == 78
    assert sum(g.n_images for g in audit.groups if g.attribute == "sex") == 80
    assert any(n.startswith("1 of 80 images have a recorded age over 100") and first in n for n in audit.notes)
    assert any(n.startswith("2 of 80 images have no view position") for n in audit.notes)
    assert any(n.startswith("1 of 80 images have no age (or a negative one)") and fourth in n for n in audit.notes)


def test_written_files_read_back_through_the_typed_reader(tmp_path):
    labels, predictions = constructed(40)
    meta, source = subgroups.attach_metadata(labels)
    audit = subgroups.audit(labels, predictions, THRESHOLDS, meta, metadata=source, n_bootstrap=20)
    results.write_subgroups(audit, meta, tmp_path)
    assert results.read_subgroups(tmp_path) == audit
    table = pd.read_csv(tmp_path / results.SUBGROUPS_CSV)
    assert len(table) == len(audit.groups) * (3 * len(FINDINGS) + 2)
    assert set(table["measure"]) == set(results.SUBGROUP_MEASURES)
    assert results.read_subgroup_metadata(tmp_path)["Image"].tolist() == labels["Image"].tolist()
    results.write_subgroups(None, None, tmp_path)  # an evaluation without an audit leaves no stale one
    assert results.read_subgroups(tmp_path) is None and not (tmp_path / results.SUBGROUPS_CSV).exists()


def test_bad_age_edges_and_min_count_are_one_line_input_errors():
    labels, predictions = constructed(20)
    with pytest.raises(InputError, match="increasing whole years"):
        run_audit(labels, predictions, age_edges=(40, 20))
    with pytest.raises(InputError, match="min_count 0"):
        run_audit(labels, predictions, min_count=0)


# --- through the command line: evaluate writes and prints the audit, compare compares gaps -----------------------


def write_nih_labels(labels: pd.DataFrame, path):
    """A canonical table with Sex, Age, View as an NIH Data_Entry CSV (its own age, sex and view)."""
    findings = labels[list(FINDINGS)].to_numpy().astype(bool)
    nih = pd.DataFrame({
        "Image Index": labels["Image"],
        "Finding Labels": ["|".join(f for f, on in zip(FINDINGS, row, strict=True) if on) or "No Finding"
                           for row in findings],
        "Patient ID": labels["PatientId"], "Patient Age": labels["Age"], "Patient Gender": labels["Sex"],
        "View Position": labels["View"],
    })
    nih.to_csv(path, index=False)
    return path


def test_evaluate_writes_prints_and_plots_the_audit(tmp_path, capsys):
    from conftest import run_main, write_predictions

    predictions = write_predictions(TEST_LABELS, tmp_path / "preds.csv")
    out = tmp_path / "eval"
    code, printed, err = run_main(capsys, "evaluate", "--predictions", predictions, "--labels", TEST_LABELS,
                                  "--out", out, "--bootstrap", "50", "--plots", "--subgroup-min", "5")
    assert code == 0, err
    assert "subgroups of 55 images" in printed and "sex: female" in printed and "too few (" in printed
    assert "far too few for conclusions" in printed
    assert f"note: measured on 55 images of {TEST_LABELS} at the evaluation's operating thresholds" in printed
    for name in (*results.SUBGROUP_FILES, "subgroups_auc.html", "subgroups_gaps.html"):
        assert (out / name).is_file(), name
    audit = results.read_subgroups(out)
    assert audit.min_count == 5 and audit.n_resamples == 50
    assert any(note.startswith("subgroup audit of 55 images") for note in results.read_metrics(out).notes)

    code, printed, _ = run_main(capsys, "evaluate", "--predictions", predictions, "--labels", TEST_LABELS,
                                "--out", out, "--bootstrap", "0", "--no-subgroups")
    assert code == 0 and "subgroups of" not in printed
    assert not any((out / name).exists() for name in results.SUBGROUP_FILES)  # no stale audit left behind


@pytest.mark.parametrize(("flags", "words"), [
    (["--age-groups", "40,20"], ["--age-groups", "increasing whole years"]),
    (["--subgroup-min", "0"], ["--subgroup-min", "1 or more"]),
])
def test_bad_subgroup_flags_are_one_line_errors(tmp_path, capsys, flags, words):
    from conftest import assert_one_line_error, run_main, write_predictions

    predictions = write_predictions(TEST_LABELS, tmp_path / "preds.csv")
    code, _, err = run_main(capsys, "evaluate", "--predictions", predictions, "--labels", TEST_LABELS,
                            "--out", tmp_path / "eval", *flags)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_without_the_metadata_evaluate_still_works_and_says_why_there_is_no_audit(tmp_path, capsys, monkeypatch):
    from conftest import run_main, write_predictions

    predictions = write_predictions(TEST_LABELS, tmp_path / "preds.csv")
    from pipeline.core import paths

    monkeypatch.setattr(paths, "METADATA_DIR", tmp_path / "nowhere")  # as if the package lacked its metadata
    code, _, err = run_main(capsys, "evaluate", "--predictions", predictions, "--labels", TEST_LABELS,
                            "--out", tmp_path / "eval", "--bootstrap", "0")
    assert code == 0, err
    assert results.read_subgroups(tmp_path / "eval") is None
    assert any(note.startswith("no subgroup audit: ") and "NIH metadata not found" in note
               for note in results.read_metrics(tmp_path / "eval").notes)


def test_compare_reports_whether_two_models_gaps_differ(tmp_path, capsys):
    from conftest import run_main

    labels, biased = constructed(400)
    fair = biased.copy()  # the same women; men now detected as often as women (0.9) and with their 0.1 alarms
    men = labels["Sex"] == "M"
    for positive, rate in ((1, 0.9), (0, 0.1)):
        rows = np.flatnonzero(men & (labels["Atelectasis"] == positive))
        fair.loc[rows, "Atelectasis"] = np.where(np.arange(len(rows)) < round(rate * len(rows)), 0.8, 0.2)
    labels_csv = write_nih_labels(labels, tmp_path / "labels.csv")
    for name, table in (("biased", biased), ("fair", fair)):
        table.to_csv(tmp_path / f"{name}.csv", index=False)
        code, _, err = run_main(capsys, "evaluate", "--predictions", tmp_path / f"{name}.csv", "--labels",
                                labels_csv, "--out", tmp_path / name, "--bootstrap", "200",
                                "--thresholds", threshold_file(tmp_path))
        assert code == 0, err
    assert results.read_subgroups(tmp_path / "biased").metadata == "the label file's own age, sex and view"
    code, printed, err = run_main(capsys, "compare", tmp_path / "biased", tmp_path / "fair", "--bootstrap", "200")
    assert code == 0, err
    assert "subgroup gaps (group - rest) compared:" in printed and "sex: female" in printed
    from pipeline.evaluation import compare

    rows = compare.compare([tmp_path / "biased", tmp_path / "fair"], n_bootstrap=200)["comparisons"][0]["subgroup_gaps"]
    women = {(r["measure"], r["finding"]): r for r in rows if r["attribute"] == "sex" and r["group"] == "female"}
    sensitivity = women[("sensitivity", "Atelectasis")]
    assert sensitivity["gap_reference"] == pytest.approx(0.3) and sensitivity["gap"] == pytest.approx(0.0)
    assert sensitivity["difference"] == pytest.approx(-0.3) and sensitivity["differ"] is True
    assert sensitivity["difference_ci"][0] <= -0.3 <= sensitivity["difference_ci"][1]
    assert women[("underdiagnosis", "any")]["difference"] == pytest.approx(0.3)
    assert women[("underdiagnosis", "any")]["differ"] is True


def threshold_file(folder):
    path = folder / "thresholds.json"
    path.write_text(pd.Series(THRESHOLDS).to_json())
    return path


def test_a_gap_whose_rest_is_too_small_says_so_instead_of_a_blank():
    labels, predictions = constructed(40)
    men = labels.index[labels["Sex"] == "M"]
    labels.loc[men[4:], "Sex"] = np.nan  # 4 men left: too few to be the women's rest
    audit = run_audit(labels, predictions, n_bootstrap=20)
    women = audit.group("sex", "female")
    assert women.findings["Atelectasis"].sensitivity.value == pytest.approx(0.9)
    assert women.findings["Atelectasis"].sensitivity.gap is None
    row = subgroups.summary_table(audit, "Atelectasis").set_index("Subgroup").loc["sex: female"]
    assert row["Sensitivity gap to rest (95% CI)"] == "too few in the rest (< 10)"
    men = subgroups.summary_table(audit).set_index("Subgroup").loc["sex: male"]
    assert men["Underdiagnosis (95% CI)"].startswith("too few")  # the group itself is too few: its own cell says so
    assert men["Underdiagnosis gap to rest (95% CI)"] == ""
