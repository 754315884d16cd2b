"""The report library: the answer first, verdicts that follow the numbers, rounding, missing pieces, figures."""

import copy
import html
import re
from pathlib import Path

import pytest
from PIL import Image

from sslgraph.config import Config, to_dict
from sslgraph.report import (
    FigureBlock,
    Heading,
    Paragraph,
    ReportInputs,
    Table,
    edge_variants,
    figure_caption,
    flatten,
    fmt_number,
    fmt_seconds,
    fmt_share,
    render_html,
    render_markdown,
    report_blocks,
    verdict,
)


def _metrics() -> dict:
    probe = {"mean": 81.23456, "std": 0.4321, "accuracies": [80.5, 81.75, 81.4537],
             "protocol": {"lr": 0.01, "steps": 100, "seeds": 3}}
    return {
        "dataset": {"name": "cifar10", "train_subset": 500, "test_subset": None},
        "seed": 7,
        "backbone": "vit_mini",
        "seconds": {"backbones": 12.345, "nodes": 3.21},
        "backbones": {
            "splits": {"train": 500, "test": 200},
            "feature_sets": {
                "teacher": {"dim": 192, "knn": {"10": 55.5, "20": 56.125},
                            "linear_probe": {"top1": 61.0625, "protocol": {"epochs": 100, "lr_scaled": 0.000125}}},
                "student": {"dim": 192, "knn": {"10": 54.0, "20": 53.9375}},
            },
        },
        "nodes": {
            "splits": {"train": 500, "test": 200},
            "feature_sets": {
                "raw": {"dim": 384, "knn": {"10": 57.75, "20": 58.3125}, "logistic_regression": probe},
                "refined": {"dim": 1536, "knn": {"10": 63.5625, "20": 64.875},
                            "logistic_regression": dict(probe, mean=66.0312)},
            },
            "graphs": {"teacher": {"nodes": 700, "edges": 4321, "in_degree_test": {"histogram": [0, 3, 197]},
                                   "train_to_test": {"same_class_share": 0.61234}},
                       "student": {"nodes": 700, "edges": 4290, "in_degree_test": {"histogram": [0, 4, 196]},
                                   "train_to_test": {"same_class_share": 0.59876}}},
        },
    }


def inputs(tmp_path: Path, **changes) -> ReportInputs:
    (tmp_path / "figures").mkdir(exist_ok=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "figures" / "embedding_tsne.png")
    log = [{"epoch": -1, "knn_top1": 11.0}]
    log += [{"epoch": epoch, "loss": 4.0 - epoch, "knn_top1": 30.0 + epoch, "epoch_seconds": 10.0,
             "images_per_sec": 50.0} for epoch in range(2)]
    values = dict(title="demo", metrics=_metrics(), config=to_dict(Config()), stage_seconds={"pretrain": 12.5},
                  pretrain_log=log, refine_log=[{"epoch": 0, "loss": 0.5, "seconds": 1.5}],
                  figures=[Path("figures/embedding_tsne.png")])
    values.update(changes)
    return ReportInputs(**values)


def test_report_lists_every_metric_rounded(tmp_path):
    blocks = report_blocks(inputs(tmp_path))
    md, page = render_markdown(blocks), render_html(blocks, tmp_path)
    leaves = flatten(_metrics())
    assert len(leaves) > 30
    for key, value in leaves:
        shown = "null" if value is None else fmt_number(value)
        assert f"| {key} | {shown} |" in md, key
        cell = '<td( class="short")?>'
        assert re.search(f"{cell}{re.escape(key)}</td>{cell}{re.escape(html.escape(shown))}</td>", page), key
    assert "| nodes.feature_sets.raw.logistic_regression.std | 0.4321 |" in md
    assert "| nodes.feature_sets.refined.logistic_regression.mean | 66.03 |" in md


def test_report_summary_timings_and_figures(tmp_path):
    blocks = report_blocks(inputs(tmp_path))
    md, page = render_markdown(blocks), render_html(blocks, tmp_path)
    assert md.startswith("# sslgraph run: demo")
    assert "| nodes: refined (GNN) | 1536 | 63.56 | 64.88 | 66.03 ± 0.43 (logistic, 3 seeds) |  |  |" in md
    assert "| backbone: teacher | 192 | 55.50 | 56.12 | 61.06 (SGD probe) |" in md
    assert "20.0 s (10.0 s/epoch)" in md and "11.00 / 31.00" in md and "| stage pretrain | 12.5 s |" in md
    assert "| method.name | graph |" in md
    caption = "t-SNE of the held-out nodes' features, raw (left) and refined (right), coloured by class"
    assert f"![{caption}](figures/embedding_tsne.png)" in md
    assert "data:image/png;base64," in page and 'src="figures/' not in page
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page


def test_report_says_what_is_missing(tmp_path):
    md = render_markdown(report_blocks(ReportInputs(title="empty")))
    assert "No metrics yet" in md and "No saved configuration" in md and "No training logs" in md


def test_flatten_and_number_formats():
    assert flatten({"a": {"b": 1, "c": [1, 2.5]}, "d": None}) == [("a.b", 1), ("a.c", [1, 2.5]), ("d", None)]
    assert fmt_number([1, 2.5]) == "1, 2.5" and fmt_number(0.1) == "0.1" and fmt_number(True) == "true"
    assert fmt_number(0.24531334555646198) == "0.2453" and fmt_number(14.857080459594727) == "14.86"
    assert fmt_number(256.0374695364778) == "256" and fmt_number(5.0) == "5" and fmt_number(float("nan")) == "n/a"
    assert fmt_share(0.24531334555646198) == "24.5 %" and fmt_share(None) == "n/a"
    assert [fmt_seconds(s) for s in (0.06, 12.5, 643.9, 7300.0)] == ["0.06 s", "12.5 s", "10 min 44 s", "2 h 02 min"]


def _entry(knn: float, probe: float, std: float) -> dict:
    return {"dim": 64, "knn": {"10": knn - 1.0, "20": knn},
            "logistic_regression": {"mean": probe, "std": std, "accuracies": [probe - std, probe + std]}}


def _ablation(raw=(40.0, 50.0, 0.2), propagated=None, refined=None, shares=(0.45, 0.44)) -> dict:
    """Hand-made node metrics: ``(kNN20, probe mean, probe std)`` per feature set, purity per graph."""
    sets = {name: _entry(*values) for name, values in (("raw", raw), ("propagated", propagated),
                                                        ("refined", refined)) if values is not None}
    graphs = {stream: {"nodes": 100, "edges": 900, "train_nodes": 80, "test_nodes": 20,
                       "train_to_train": {"edges": 800, "same_class_share": share},
                       "in_degree_train": {"min": 9, "mean": 9.5, "max": 10, "histogram": [0] * 9 + [40, 40]}}
              for stream, share in zip(("teacher", "student"), shares)}
    return {"dataset": {"name": "cifar10"}, "nodes": {"splits": {"train": 80, "test": 20}, "feature_sets": sets,
                                                      "graphs": graphs}}


def _verdict(metrics: dict, **changes) -> str:
    return verdict(ReportInputs(title="t", metrics=metrics, refined_parameter_free=False, **changes))


def test_headline_comes_first_then_backbones_pictures_and_configuration_last(tmp_path):
    blocks = report_blocks(inputs(tmp_path))
    assert blocks[1] == Heading("Headline")
    assert isinstance(blocks[2], Paragraph) and blocks[2].emphasis
    assert isinstance(blocks[3], Table) and blocks[3].headers[:3] == ["node features", "kNN20 (%)", "probe (%)"]
    md = render_markdown(blocks)
    order = [md.index(f"## {name}\n") for name in ("Headline", "Backbone results", "Figures", "Configuration",
                                                    "Timings", "Graph statistics", "All metrics")]
    assert order == sorted(order)
    assert md.splitlines()[4] == ("**Refinement (trained GNN) is mixed on these graphs: +6.6 kNN20 points (a gain) / "
                                  "-15.2 ± 0.61 probe points (a loss) against raw features.**")
    assert "| trained GNN (gcn) | 64.88 | 66.03 ± 0.43 | +6.6 | -15.2 ± 0.61 |" in md


def test_verdict_says_gain_when_both_gains_exceed_the_spread():
    line = _verdict(_ablation(refined=(44.0, 53.0, 0.2)))
    assert line == ("Refinement (trained GNN) gains +4.0 kNN20 points / +3.0 ± 0.28 probe points over raw features "
                    "(graphs 45.0 % / 44.0 % same-class, teacher / student).")


def test_verdict_says_loss_and_names_the_graphs():
    line = _verdict(_ablation(refined=(35.5, 47.0, 0.3)))
    assert line.startswith("Refinement (trained GNN) does not help on these graphs: -4.5 kNN20 points / "
                           "-3.0 ± 0.36 probe points against raw features (graphs 45.0 %")


def test_verdict_calls_differences_within_the_spread_ties():
    # kNN +0.05 with no spread measured; probe +0.5 against a spread of 0.63: both ties, not gains.
    line = _verdict(_ablation(raw=(40.0, 50.0, 0.6), refined=(40.05, 50.5, 0.2)))
    assert line.startswith("Refinement (trained GNN) makes no difference beyond the spread on these graphs: "
                           "+0.05 kNN20 points / +0.50 ± 0.63 probe points")


def test_verdict_mixed_outcomes_are_named_each():
    line = _verdict(_ablation(refined=(42.0, 49.9, 0.2)))
    assert "is mixed on these graphs: +2.0 kNN20 points (a gain) / -0.10 ± 0.28 probe points (within the spread)" \
        in line


def test_verdict_compares_the_trained_gnn_with_propagation():
    line = _verdict(_ablation(propagated=(43.0, 52.0, 0.2), refined=(44.0, 53.0, 0.2)))
    assert line.endswith("; against parameter-free propagation it is +1.0 kNN20 points / +1.0 ± 0.28 probe points.")


def test_verdict_says_when_the_rule_kept_the_raw_features():
    metrics = _ablation(propagated=(40.5, 50.0, 0.2))
    metrics["nodes"]["propagation"] = {"alpha": 1.0, "hops": 0}
    line = _verdict(metrics)
    assert line.startswith("Parameter-free propagation is mixed on these graphs: +0.50 kNN20 points (a gain)")
    assert line.endswith("; the label-free rule kept the raw features (alpha 1, no hop), so the difference is "
                         "their standardisation alone.")
    metrics["nodes"]["propagation"] = {"alpha": 0.5, "hops": 2}
    assert "standardisation" not in _verdict(metrics)


def test_a_probe_shared_with_raw_is_a_difference_of_exactly_zero_without_a_spread(tmp_path):
    # Unpropagated features are probed once, with raw (same input after standardisation): no spread to add.
    metrics = _ablation(raw=(40.0, 50.0, 0.9), propagated=(40.5, 50.0, 0.9))
    metrics["nodes"]["feature_sets"]["propagated"]["logistic_regression"]["same_input_as"] = "raw"
    metrics["nodes"]["propagation"] = {"alpha": 1.0, "hops": 0}
    line = _verdict(metrics)
    assert "+0.50 kNN20 points (a gain) / +0.00 probe points (the same probe input) against raw" in line
    md = render_markdown(report_blocks(ReportInputs(title="t", metrics=metrics, refined_parameter_free=True)))
    assert "| 40.50 | 50.00 ± 0.90 | +0.50 | +0.00 (same input) |" in md


def test_verdict_uses_per_refinement_seed_results_where_present():
    metrics = _ablation(refined=(99.0, 99.0, 0.0))
    metrics["nodes"]["feature_sets"]["refined"]["per_seed"] = [
        {"knn": {"20": 43.0}, "logistic_regression": {"mean": 52.0, "std": 0.1}},
        {"knn": {"20": 45.0}, "logistic_regression": {"mean": 54.0, "std": 0.1}}]
    blocks = report_blocks(ReportInputs(title="t", metrics=metrics, refined_parameter_free=False))
    md = render_markdown(blocks)
    assert "| refined (trained GNN) | 44.00 ± 1.00 | 53.00 ± 1.00 | +4.0 ± 1.00 | +3.0 ± 1.02 |" in md
    assert "std over 2 probe seeds (raw) and over 2 refinement seeds (refined). A gain" in md
    # The same numbers as one entry of per-seed lists.
    metrics["nodes"]["feature_sets"]["refined"]["per_seed"] = {"knn": {"20": [43.0, 45.0]},
                                                               "logistic_regression": {"mean": 53.0, "std": 1.0}}
    assert _verdict(metrics).startswith("Refinement (trained GNN) gains +4.0 ± 1.00 kNN20 points / +3.0 ± 1.02")


def test_parameter_free_refinement_is_one_row_and_said_so():
    metrics = _ablation(propagated=(40.02, 49.95, 0.3), refined=(40.02, 49.95, 0.3))
    metrics["nodes"]["propagation"] = {"alpha": 1.0, "hops": 0, "selection": {"score": 0.8}}
    inputs_ = ReportInputs(title="t", metrics=metrics, refined_parameter_free=True)
    md = render_markdown(report_blocks(inputs_))
    assert "| propagated = refined (parameter-free, α = 1, 0 hops) | 40.02 | 49.95 ± 0.30 | +0.02 | -0.05 ± 0.36 |" \
        in md
    assert verdict(inputs_).startswith("Parameter-free propagation makes no difference beyond the spread")
    assert "nodes: refined (parameter-free propagation)" in md and "the propagated row is the standardised raw" in md


def test_no_17_digit_floats_outside_the_metric_dump(tmp_path):
    metrics = _ablation(raw=(45.41, 51.26, 0.17204650534085328), refined=(45.38, 51.20666666666667,
                                                                       0.2663748403200941),
                        shares=(0.24531334555646198, 0.2426763231796622))
    metrics["nodes"]["feature_sets"]["raw"]["collapse"] = {"mean_cosine": 0.3917306380685287}
    md = render_markdown(report_blocks(ReportInputs(title="t", metrics=metrics, stage_seconds={"evaluate": 643.91234},
                                                    refine_log=[{"epoch": 0, "loss": 0.123456789, "seconds": 1.0}])))
    assert re.search(r"\d\.\d{5,}", md) is None
    assert "teacher 24.5 %, student 24.3 %" in md and "| 51.26 ± 0.17 |" in md and "10 min 44 s" in md
    assert "0, 0, 0, 0" not in md[:md.index("## All metrics")]  # histograms are drawn, not listed


def test_robust_to_missing_pieces(tmp_path):
    cases = {
        "no refinement": _ablation(propagated=(42.0, 52.0, 0.2)),
        "no propagation": _ablation(refined=(42.0, 52.0, 0.2)),
        "raw only": _ablation(),
        "no graphs": {"backbones": _metrics()["backbones"], "nodes": {"skipped": "missing graphs/teacher.pt"}},
        "older run": {"nodes": {"feature_sets": {"raw": {"knn": {"20": 30.0}},
                                                 "refined": {"knn": {"20": 28.0}, "linear": {"top1": 27.0}}},
                                "graphs": {"teacher": {"nodes": 10, "edges": 20,
                                                       "in_degree_test": {"histogram": []}}}}},
        "odd values": {"nodes": {"feature_sets": {"raw": {"knn": {"20": None}, "logistic_regression": {}}},
                                 "graphs": {"edge_variants": "n/a"}}},
    }
    lines = {}
    for name, metrics in cases.items():
        blocks = report_blocks(ReportInputs(title=name, metrics=metrics))
        render_html(blocks, tmp_path)
        lines[name] = render_markdown(blocks)
    assert "Parameter-free propagation gains +2.0 kNN20 points" in lines["no refinement"]
    assert "Refinement (trained GNN) gains +2.0 kNN20 points" in lines["no propagation"]
    assert "No refinement in this run" in lines["raw only"]
    assert "No graph refinement to judge in this run (missing graphs/teacher.pt)" in lines["no graphs"]
    assert "| backbone: teacher | 56.12 | 61.06 |" in lines["no graphs"]
    assert "does not help on these graphs: -2.0 kNN20 points against raw features." in lines["older run"]
    assert "No refinement in this run" in lines["odd values"] and "| raw [teacher; student] | n/a | n/a |" \
        in lines["odd values"]


def test_edge_variants_table_when_present_and_not_a_graph_stream():
    metrics = _ablation(refined=(44.0, 53.0, 0.2))
    assert edge_variants(metrics) == {}
    metrics["nodes"]["graphs"]["edge_variants"] = {
        "fifo": {"teacher": {"same_class_share": 0.183}, "student": {"same_class_share": 0.18}},
        "mutual": {"teacher": {"same_class_share": 0.4123}, "student": {"same_class_share": None}},
        "union": {"teacher": 0.2}}
    md = render_markdown(report_blocks(ReportInputs(title="t", metrics=metrics)))
    assert "### Edge variants" in md
    assert "| fifo | 18.3 % | 18.0 % |" in md and "| mutual | 41.2 % | n/a |" in md and "| union | 20.0 % |  |" \
        not in md
    assert "| union | 20.0 % | n/a |" in md
    assert "| statistic | teacher | student |" in md  # the variants are no third graph
    without = copy.deepcopy(metrics)
    del without["nodes"]["graphs"]["edge_variants"]
    assert "Edge variants" not in render_markdown(report_blocks(ReportInputs(title="t", metrics=without)))


@pytest.mark.parametrize(("name", "caption"), [
    ("two_hop_teacher_52890", "Two-hop neighbourhood of test node 52890 in the teacher graph"),
    ("two_hop_student_12", "Two-hop neighbourhood of training node 12 in the student graph"),
    ("embedding_umap", "UMAP of the held-out nodes' features, raw (left) and refined (right), coloured by class"),
    ("something_new", "Something new"),
])
def test_figure_captions_are_sentences(name, caption):
    assert figure_caption(Path(f"figures/{name}.png"), num_train=50000) == caption


def test_degree_figure_sits_with_the_graph_statistics(tmp_path):
    figures = [Path("figures/degree_histograms.png"), Path("figures/two_hop_student_7.png"),
               Path("figures/two_hop_teacher_7.png"), Path("figures/training_curves.png")]
    blocks = report_blocks(ReportInputs(title="t", metrics=_ablation(), figures=figures))
    shown = [(i, b.path.stem) for i, b in enumerate(blocks) if isinstance(b, FigureBlock)]
    assert [stem for _, stem in shown] == ["training_curves", "two_hop_teacher_7", "two_hop_student_7",
                                           "degree_histograms"]
    statistics = blocks.index(Heading("Graph statistics"))
    assert shown[-1][0] > statistics and shown[-2][0] < statistics


def test_evaluation_layout_of_seeds_and_edge_variants():
    """The layout the evaluation stage writes: ``refinement_seeds`` beside the first seed's numbers and
    ``graphs.edge_variants.<variant>.<stream>`` with edge counts."""
    metrics = _ablation(refined=(44.0, 53.0, 0.2))
    metrics["nodes"]["feature_sets"]["refined"]["refinement_seeds"] = {
        "seeds": [0, 1, 2], "identical_to_first": 0,
        "knn": {"10": {"mean": 43.0, "std": 0.5, "values": [43.5, 42.5, 43.0]},
                "20": {"mean": 44.0, "std": 0.4, "values": [44.4, 43.6, 44.0]}},
        "logistic_regression": {"mean": 52.5, "std": 0.3, "values": [52.8, 52.2, 52.5]}}
    metrics["nodes"]["graphs"]["edge_variants"] = {
        variant: {stream: {"edges": edges, "same_class": 1, "same_class_share": share} for stream in ("teacher",
                                                                                                     "student")}
        for variant, edges, share in (("exported", 742854, 0.24531334555646198), ("mutual", 301234, 0.3512))}
    config = {"refine": {"encoder": "gcn", "edges": "mutual"}}
    md = render_markdown(report_blocks(ReportInputs(title="t", metrics=metrics, config=config,
                                                    refined_parameter_free=False)))
    assert "| trained GNN (gcn) | 44.00 ± 0.40 | 52.50 ± 0.30 | +4.0 ± 0.40 | +2.5 ± 0.36 |" in md
    assert "3 refinement seeds (refined)" in md
    assert "| exported | 24.5 % of 742,854 edges | 24.5 % of 742,854 edges |" in md
    assert "| mutual (used by the refinement) | 35.1 % of 301,234 edges |" in md
    assert md.index("### Edge variants") < md.index("## Backbone results")
    assert "probe points over raw features (mutual edges 35.1 % / 35.1 % same-class, teacher / student)." in md


def _paths(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


def test_any_missing_or_malformed_part_still_renders(tmp_path):
    metrics = _ablation(propagated=(41.0, 51.0, 0.2), refined=(42.0, 52.0, 0.2))
    metrics["backbones"] = _metrics()["backbones"]
    metrics["nodes"]["propagation"] = {"alpha": 0.2, "hops": 2, "selection": {"scores": {"alpha=0.2,hops=2": 0.6}}}
    metrics["nodes"]["graphs"]["edge_variants"] = {"mutual": {"teacher": {"edges": 5, "same_class_share": 0.3}}}
    for path in _paths(metrics):
        for replacement in ("delete", None, "x", [], 0):
            changed = copy.deepcopy(metrics)
            parent = changed
            for key in path[:-1]:
                parent = parent[key]
            if replacement == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = replacement
            blocks = report_blocks(ReportInputs(title="t", metrics=changed, config={"refine": {"edges": "mutual"}}))
            assert render_markdown(blocks).startswith("# sslgraph run: t\n\n## Headline"), (path, replacement)
