"""``distill.benchmark`` with tiny repeat counts: every backend runs (each in its own process) and the json holds
every figure. No timing assertions: this machine is shared and noisy."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from distill.deploy import benchmark  # noqa: E402
from distill.deploy.benchmark import count_macs, count_parameters  # noqa: E402
from distill.students import create_student, save_student  # noqa: E402
from tests.distill.conftest import tiny_student_config  # noqa: E402

TINY_RUN = ["--size", "96x64", "--warmup", "0", "--repeats", "2", "--throughput_repeats", "1"]
TINY_RUN += ["--matmul_size", "128", "--matmul_repeats", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    config = tiny_student_config()
    student = save_student(create_student(config), config, folder / "tiny")
    path = folder / "results" / "deploy.json"
    assert benchmark.main(["--model", str(student), "--out", str(path), *TINY_RUN]) == 0
    return json.loads(path.read_text())


def test_json_holds_every_figure(result: dict) -> None:
    assert result["machine"]["logical_cores"] >= 1 and "int8_dot_product" in result["machine"]
    assert result["matmul"]["flops_per_s_median"] > 0 and result["matmul"]["size"] == 128
    assert result["settings"]["each_backend_in_own_subprocess"] is True
    assert result["int8_note"] and result["machine"]["threads"] == 1 and result["matmul"]["threads"] == 1
    (student,) = result["students"]
    assert student["name"] == "tiny" and student["input"] == [1, 3, 64, 96]
    assert set(student["backends"]) == set(benchmark.BACKENDS)
    for backend in student["backends"].values():
        for key, batch in (("batch1", 1), ("batch8", 8)):
            figures = backend[key]
            assert figures["batch"] == batch and figures["median_ms"] > 0 and figures["images_per_s"] > 0
            assert figures["ratio_to_lower_bound"] > 0
    assert set(student["ratios"]) == {
        f"{pair}_speedup_batch{batch}"
        for pair in ("ort_fp32_vs_torch_eager", "ort_int8_vs_ort_fp32")
        for batch in (1, 8)
    }


def test_complexity_and_lower_bound_follow_their_definitions(result: dict) -> None:
    student = result["students"][0]
    model = create_student(tiny_student_config())
    assert student["params"] == count_parameters(model)
    assert student["macs"] == count_macs(model, (1, 3, 64, 96))
    flops = result["matmul"]["flops_per_s_median"]
    assert student["lower_bound_ms"]["batch1"] == pytest.approx(2 * student["macs"] / flops * 1e3)
    assert student["lower_bound_ms"]["batch8"] == pytest.approx(8 * student["lower_bound_ms"]["batch1"])
    eager = student["backends"]["torch_eager"]["batch1"]
    assert eager["ratio_to_lower_bound"] == pytest.approx(eager["median_ms"] / student["lower_bound_ms"]["batch1"])


def test_report_prints_every_backend_and_the_int8_reason(result: dict) -> None:
    report = benchmark.format_report(result)
    for label in (benchmark.BACKEND_LABELS[backend] for backend in benchmark.BACKENDS):
        assert label in report
    assert "GFLOP/s" in report and "int8" in report


@pytest.mark.parametrize(
    ("flags", "has_dot_product"), [({"avx2"}, False), ({"avx2", "avx512_vnni"}, True), ({"asimddp"}, True)]
)
def test_int8_note_names_the_reason(flags: set[str], has_dot_product: bool) -> None:
    cpu = {"int8_dot_product": sorted(flags & set(benchmark.INT8_DOT_PRODUCT_FLAGS))}
    note = benchmark.int8_note(cpu)
    assert ("no int8 dot-product" in note) is not has_dot_product


def test_rounds_combine_into_the_median_of_round_medians() -> None:
    def measured(b1_ms: float, b8_ms: float) -> dict:
        figures = {}
        for key, batch, ms in (("batch1", 1, b1_ms), ("batch8", 8, b8_ms)):
            figures[key] = {"batch": batch, "repeats": 3, "median_ms": ms, "min_ms": ms * 0.9}
        return {"backend": "ort_fp32", "threads": 2, **figures}

    combined = benchmark._combine_backend([measured(10, 80), measured(30, 100), measured(12, 90)])
    assert combined["rounds"] == 3
    assert combined["batch1"]["median_ms"] == 12 and combined["batch1"]["repeats"] == 9
    assert combined["batch1"]["min_ms"] == pytest.approx(9.0)
    assert combined["batch8"]["images_per_s"] == pytest.approx(8 / 0.090)


def test_compute_bound_uses_the_faster_gemm_engine() -> None:
    """The bound's FLOP rate is the fastest of the engines measured (torch's GEMM and ONNX Runtime's MLAS)."""
    from distill.deploy.benchmark import measure_matmul_flops

    record = measure_matmul_flops(size=128, warmup=1, repeats=3, threads=1)
    rates = record["flops_per_s_median_by_engine"]
    assert set(rates) == {"torch", "onnxruntime"}
    assert record["engine"] == max(rates, key=rates.get)
    assert record["flops_per_s_median"] == max(rates.values())


def test_a_phone_runtime_without_its_toolchain_names_the_extra(tmp_path, capsys: pytest.CaptureFixture) -> None:
    from distill.deploy.export import missing_toolchain

    if not missing_toolchain("tflite"):
        pytest.skip("LiteRT is installed here: the missing-toolchain message cannot be shown")
    torch.manual_seed(0)
    config = tiny_student_config()
    student = save_student(create_student(config), config, tmp_path / "tiny")
    argv = ["--model", str(student), "--out", str(tmp_path / "b.json"), "--backend", "litert_fp32", *TINY_RUN]
    assert benchmark.main(argv) == 2
    # the benchmark writes the .tflite it times: the exporter's extra, not the interpreter's small `litert`
    assert "pip install 'depth-distill[export-litert]'" in capsys.readouterr().err


def test_an_out_folder_is_refused_before_any_timing(tmp_path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    """``--out folder/`` (an existing folder, or a path ending in /): one line before anything runs, not an
    IsADirectoryError once the timings are done; checked first, so even a missing model is not reached."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    torch.manual_seed(0)
    config = tiny_student_config()
    student = save_student(create_student(config), config, tmp_path / "tiny")
    for out in ("results", "results/", "new/"):
        for model in (str(student), "no_such_student"):
            assert benchmark.main(["--model", model, "--out", out, *TINY_RUN]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err == [f"python -m distill.benchmark: error: --out {out} is a folder: name the JSON file to write, "
                           f"e.g. --out {Path(out) / 'benchmark.json'}"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results", "tiny"]
    assert not any((tmp_path / "results").iterdir())


def test_every_backend_name_means_the_same_thing_everywhere() -> None:
    """The command's choices (a ``Literal``, which must be written out), the worker's backends, the report's labels
    and the file each backend runs all name the same backends."""
    from typing import get_args

    from distill.deploy.benchmark import Backend

    names = get_args(Backend)
    assert names == (*benchmark.BACKENDS, *benchmark.RUNTIME_BACKENDS)
    assert set(benchmark.BACKEND_LABELS) == set(names)
    assert set(benchmark.BACKEND_FORMATS) == set(names) - {"torch_eager"}
