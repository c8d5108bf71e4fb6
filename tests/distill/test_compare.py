"""``distill.compare``: one table of size, latency and accuracy for several models, on generated scenes.

The figures are checked against what is known without the command: the constant baseline's metrics worked out in
numpy from the depth files, each student's by ``python -m distill.evaluate`` on the same frames, and the parameter
counts by construction (one student is wider). Timing is exercised once with tiny repeat counts (no assertion on
speed: this machine is shared)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.deploy.benchmark import count_macs, count_parameters
from distill.deploy.export import export_onnx
from distill.evaluation import compare
from distill.evaluation import evaluate as evaluation
from distill.students import load_student
from shards.cli.errors import UserError

LIMIT = 3
PICTURE_FRAMES = 2
SIZE = (128, 96)
SIZE_ARGS = ["--size", f"{SIZE[0]}x{SIZE[1]}"]
#: Which end of each numeric column is best, by the header's last word.
LOWEST_IS_BEST = ("(M)", "(G)", "ms", "bound", "AbsRel", "RMSE")


@pytest.fixture(scope="module")
def students(save_tiny_student) -> dict[str, Path]:
    """Two tiny students; 'wide' has a wider decoder, so 'small' has fewer parameters and MACs."""
    return {
        "small": save_tiny_student("small", seed=0),
        "wide": save_tiny_student("wide", seed=1, decoder_widths=[64, 48, 32, 24, 16]),
    }


@pytest.fixture(scope="module")
def compared(students: dict[str, Path], scene_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    argv = ["--model", str(students["small"]), "--model", f"wide={students['wide']}", "--model", "constant"]
    argv += ["--data", str(scene_folder), "--data", f"mid={scene_folder}:midas", "--limit", str(LIMIT), *SIZE_ARGS]
    argv += ["--picture_frames", str(PICTURE_FRAMES), "--latency", "false", "--out", str(out)]
    assert compare.main(argv) == 0
    return out


def _table(out: Path) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in (out / "compare.md").read_text().splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    assert set(cells[1]) == {"---"}
    return cells[0], cells[2:]


def _constant_metrics(folder: Path, limit: int) -> dict[str, float]:
    """The constant baseline after least-squares alignment in inverse depth: 1 / mean(1 / d) per image, capped at
    10 m; valid pixels 0 < d < 10 m (no crop on 128x96 frames)."""
    per_image: dict[str, list[float]] = {"abs_rel": [], "delta1": [], "rmse": []}
    for path in sorted((folder / "depth").glob("*.png"))[:limit]:
        depth = np.asarray(Image.open(path), dtype=np.float64) / 1000.0
        d = depth[(depth > 0) & (depth < 10)]
        predicted = 1.0 / max(np.mean(1.0 / d), 0.1)
        per_image["abs_rel"].append(np.mean(np.abs(predicted - d) / d))
        per_image["delta1"].append(np.mean(np.maximum(predicted / d, d / predicted) < 1.25))
        per_image["rmse"].append(np.sqrt(np.mean((predicted - d) ** 2)))
    return {key: float(np.mean(values)) for key, values in per_image.items()}


def _evaluate_alone(model: Path, folder: Path, out: Path) -> dict[str, float]:
    argv = ["--model", str(model), "--data", str(folder), "--out", str(out), "--crop", "none", "--limit", str(LIMIT)]
    assert evaluation.main([*argv, *SIZE_ARGS]) == 0
    return json.loads((out / "metrics.json").read_text())["metrics"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data/nyu.mat", (None, "data/nyu.mat", None)),
        ("data/nyu.mat:common", (None, "data/nyu.mat", "common")),
        ("nyu=data/nyu.mat:reference", ("nyu", "data/nyu.mat", "reference")),
        ("runs/lr=0.1/scenes", (None, "runs/lr=0.1/scenes", None)),  # a '/' before '=': a path, not a name
        ("user/nyu_depth_v2", (None, "user/nyu_depth_v2", None)),  # a datasets hub name
        ("https://host/data", (None, "https://host/data", None)),  # not a preset after ':'
    ],
)
def test_data_syntax(text: str, expected: tuple) -> None:
    spec = compare.parse_data_spec(text)
    assert (spec.name, spec.path, spec.preset) == expected


def test_data_syntax_keeps_an_existing_path_whole_and_names_unknown_presets(tmp_path: Path) -> None:
    odd = tmp_path / "a=b:midas"
    odd.mkdir()
    assert compare.parse_data_spec(str(odd)) == compare.DataSpec(None, str(odd), None)
    with pytest.raises(UserError, match="unknown protocol 'nosuch'.*reference"):
        compare.parse_data_spec("data/nyu.mat:nosuch")
    assert compare.parse_model_spec("fast=runs/b/student") == ("fast", "runs/b/student")
    assert compare.parse_model_spec("constant") == (None, "constant")


def test_display_names_tell_training_outputs_apart(tmp_path: Path) -> None:
    runs = [tmp_path / run / "student" for run in ("run_a", "run_b")]
    for folder in runs:
        folder.mkdir(parents=True)
    models = [str(runs[0]), str(runs[1]), "constant", "constant", str(runs[0])]
    names = compare.display_names([None, None, None, None, "mine"], models)
    assert names == ["run_a/student", "run_b/student", "constant", "constant_2", "mine"]


def test_one_row_per_model_with_each_data_sets_columns(compared: Path, scene_folder: Path) -> None:
    header, rows = _table(compared)
    assert [row[0] for row in rows] == ["small", "wide", "constant"]
    assert header[:8] == ["Model", "Architecture", "Input", "Params (M)", "MACs (G)", "Runtime", "Batch-1 ms",
                          "x compute bound"]
    assert header[8:] == [
        f"{data} {metric}" for data in (scene_folder.name, "mid") for metric in ("AbsRel", "δ1", "RMSE")
    ]
    by_name = {row[0]: row for row in rows}
    assert by_name["small"][1] == "fastdepth" and by_name["constant"][1] == "n/a"
    assert all(row[2] == "128x96" for row in rows)
    assert all(row[5] == row[6] == row[7] == "n/a" for row in rows)  # --latency false
    assert by_name["constant"][3] == by_name["constant"][4] == "n/a"


def test_figures_are_the_evaluation_commands_and_bold_marks_the_best(
    compared: Path, students: dict[str, Path], scene_folder: Path, tmp_path: Path
) -> None:
    record = json.loads((compared / "compare.json").read_text())
    models = {entry["name"]: entry for entry in record["models"]}
    expected = {"constant": _constant_metrics(scene_folder, LIMIT)}
    for name in ("small", "wide"):
        expected[name] = _evaluate_alone(students[name], scene_folder, tmp_path / name)
        network, _ = load_student(students[name])
        assert models[name]["params"] == count_parameters(network)
        assert models[name]["macs"] == count_macs(network, (1, 3, SIZE[1], SIZE[0]))
    assert models["small"]["params"] < models["wide"]["params"] and models["small"]["macs"] < models["wide"]["macs"]
    for name, metrics in expected.items():
        for key, value in metrics.items():
            if key in ("abs_rel", "delta1", "rmse"):
                assert models[name]["results"][scene_folder.name]["metrics"][key] == pytest.approx(value, rel=1e-5)

    header, rows = _table(compared)
    checked = 0
    for column, title in enumerate(header[3:], start=3):
        shown = {row[0]: row[column].strip("*") for row in rows if row[column] != "n/a"}
        if len(shown) < 2:
            assert not any(row[column].startswith("**") for row in rows), title
            continue
        lowest = title.split()[-1] in LOWEST_IS_BEST
        best = (min if lowest else max)(float(value) for value in shown.values())
        winners = {name for name, value in shown.items() if float(value) == best}
        assert {row[0] for row in rows if row[column].startswith("**")} == winners, title
        checked += 1
    assert checked == 2 + 6  # params, MACs, and 3 metrics x 2 data sets
    assert "**" in next(row for row in rows if row[0] == "small")[3]  # the smaller student, by construction


def test_json_matches_the_table_and_states_each_protocol(compared: Path, scene_folder: Path) -> None:
    names = (scene_folder.name, "mid")  # the folder's name by default, a given name after '='
    record = json.loads((compared / "compare.json").read_text())
    header, rows = _table(compared)
    assert record["table"] == {"header": header, "rows": rows}
    for entry, row in zip(record["models"], rows, strict=True):
        assert row[0] == entry["name"]
        sizes = [entry["params"] and entry["params"] / 1e6, entry["macs"] and entry["macs"] / 1e9]
        metrics = [entry["results"][data]["metrics"][key] for data in names for key in ("abs_rel", "delta1", "rmse")]
        for cell, value in zip(row[3:5] + row[8:], sizes + metrics, strict=True):
            if value is None:
                assert cell == "n/a"
            else:
                assert float(cell.strip("*")) == pytest.approx(value, abs=5e-4)
    protocols = {data["name"]: data["protocol"] for data in record["datasets"]}
    assert protocols[names[0]]["name"] == "reference+custom" and protocols[names[0]]["crop"] is None
    assert protocols["mid"]["name"] == "midas"
    assert all(data["count"] == LIMIT for data in record["datasets"])
    text = (compared / "compare.md").read_text()
    assert record["machine"]["processor"] in text and "python -m distill.compare" in text
    assert "protocol `reference+custom`" in text and "protocol `midas`" in text
    report = compared / record["models"][0]["results"]["mid"]["report"] / "metrics.json"
    assert json.loads(report.read_text())["protocol"]["name"] == "midas"


def test_picture_has_a_row_per_frame_and_a_column_per_model(compared: Path, scene_folder: Path) -> None:
    record = json.loads((compared / "compare.json").read_text())
    picture = record["picture"]
    assert picture["columns"] == ["RGB", "ground truth (m)", "small", "wide", "constant"]
    assert len(picture["frames"]) == PICTURE_FRAMES and picture["data"] == scene_folder.name
    # One convention (issue 29): ground truth and predictions on one bar in metres per row; rows named by frame.
    assert picture["colour_bars"] == ["depth (m)"] * PICTURE_FRAMES
    assert picture["rows"] == [name.rsplit("/", 1)[-1] for name in picture["frames"]]
    assert picture["legend"] == []  # no crop on these frames, and the scenes have no holes
    cell_height, gap = compare.PICTURE_CELL_HEIGHT, 4  # shards.tools.pictures.image_grid's cells and gaps
    cell_width = SIZE[0] * cell_height // SIZE[1]
    with Image.open(compared / "compare.png") as drawn:
        width, height = drawn.size
    # Titles, row labels, colour bars and the legend add less than one cell: five columns, a row per frame.
    assert 5 * (cell_width + gap) < width < 6 * (cell_width + gap)
    assert PICTURE_FRAMES * (cell_height + gap) < height < (PICTURE_FRAMES + 1) * (cell_height + gap)


def test_latency_runs_each_model_in_a_worker(students: dict[str, Path], scene_folder: Path, tmp_path: Path) -> None:
    """One student (exported and timed), its own .onnx file (timed; MACs n/a) and the constant (n/a), with one
    warm-up and two timed calls each: the subprocess path end to end."""
    network, _ = load_student(students["small"])
    onnx_file = export_onnx(network, tmp_path / "small.onnx", height=SIZE[1], width=SIZE[0])
    out = tmp_path / "out"
    argv = ["--model", str(students["small"]), "--model", str(onnx_file), "--model", "constant"]
    argv += ["--data", f"scenes={scene_folder}:midas", "--limit", "1", "--picture_frames", "1", *SIZE_ARGS]
    argv += ["--latency_warmup", "1", "--latency_repeats", "2", "--matmul_size", "128", "--matmul_repeats", "2"]
    assert compare.main([*argv, "--threads", "1", "--out", str(out)]) == 0
    record = json.loads((out / "compare.json").read_text())
    assert record["matmul"]["size"] == 128 and record["matmul"]["repeats"] == 2 and record["matmul"]["threads"] == 1
    student, onnx_model, constant = record["models"]
    latency = student["latency"]
    assert latency["backend"] == "ort_fp32" and latency["repeats"] == 2 and latency["median_ms"] > 0
    bound = 2 * student["macs"] / record["matmul"]["flops_per_s_median"] * 1e3
    assert latency["lower_bound_ms"] == pytest.approx(bound)
    assert latency["ratio_to_lower_bound"] == pytest.approx(latency["median_ms"] / bound)
    assert onnx_model["latency"]["median_ms"] > 0 and onnx_model["macs"] is None and "macs" in onnx_model["notes"]
    assert constant["latency"] is None and "latency" in constant["notes"]
    _, rows = _table(out)
    assert rows[0][5] == "ONNX Runtime" and rows[0][6] != "n/a" and rows[0][7] != "n/a"
    assert rows[1][4] == "n/a" and rows[1][5] == "ONNX Runtime" and rows[1][6] != "n/a" and rows[1][7] == "n/a"
    assert rows[2][3:8] == ["n/a"] * 5
    assert "each model in its own subprocess" in (out / "compare.md").read_text()


def test_unknown_preset_stops_with_the_list(scene_folder: Path, tmp_path: Path, capsys) -> None:
    assert compare.main(["--model", "constant", "--data", f"{scene_folder}:nosuch", "--out", str(tmp_path)]) == 2
    assert "unknown protocol 'nosuch'" in capsys.readouterr().err


def test_shards_of_ground_truth_are_a_data_set(metric_shards: Path, tmp_path: Path) -> None:
    """Issue 29: shards of metric labels (what ``python -m shards import-rgbd`` writes) are scored like evaluate
    scores them: no crop under the default preset; the picture's holes are in its legend."""
    argv = ["--model", "constant", "--data", f"gt={metric_shards}", "--limit", "2", "--picture_frames", "2"]
    assert compare.main([*argv, *SIZE_ARGS, "--latency", "false", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "compare.json").read_text())
    result = record["models"][0]["results"]["gt"]
    report = json.loads((tmp_path / result["report"] / "metrics.json").read_text())
    assert report["data"]["source"] == "shards" and report["count"] == 2 and report["protocol"]["crop"] is None
    assert record["picture"]["legend"] == ["no value (hole or invalid pixel)"]
    assert record["picture"]["colour_bars"] == ["depth (m)", "depth (m)"]
