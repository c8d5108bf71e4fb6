"""The GPU suite's code path, on tiny models on the CPU (``--cpu --tiny``), so it cannot rot between GPU sessions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_suite_runs_every_section_on_tiny_models(tmp_path) -> None:
    out = tmp_path / "suite.json"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--cpu", "--tiny", "--out", str(out)],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    sections = json.loads(out.read_text())["sections"]
    assert list(sections) == ["teachers", "label_precision", "labelling", "training", "decode_equivalence",
                              "labelling_paths", "training_paths"]
    assert not [name for name, record in sections.items() if "error" in record]
    assert sections["teachers"]["dpt_hybrid"]["batch_4"]["items_per_s"] > 0
    assert sections["teachers"]["dpt_hybrid"]["precisions"]["head"] == "float32"
    precision = sections["label_precision"]
    assert precision["bf16_backbone_fp32_head"]["distinct_values_per_map"] > (
        precision["bf16_everywhere"]["distinct_values_per_map"]
    )
    labelling = sections["labelling"]
    assert all(labelling[f"workers_{w}"]["labeled"] == labelling["images"] for w in (0, 2))
    assert sections["training"]["distill_loop"]["steps"] == 6
    equivalence = sections["decode_equivalence"]  # on CPU tensors the device path is today's, pixel for pixel
    assert equivalence["crop_vs_today"]["max"] == 0 and equivalence["label_code_steps"]["max"] == 0
    paths = sections["labelling_paths"]
    assert paths["2-model"]["labeled"] == paths["images"] and paths["2-model"]["decode"]["decoded_on_device"] > 0
    assert paths["2-cpu"]["decode"]["decoded_on_device"] == 0
    assert [sections["training_paths"][f"loop_{name}"]["steps"] for name in ("cpu", "model")] == [6, 6]


def test_the_real_suite_runs_each_teacher_at_its_own_size(tmp_path) -> None:
    """Without ``--tiny`` the suite gives no ``short_side``: Depth Anything runs at its authors' 518x686 on the
    384x512 crops (it ran at 378x504 when the suite passed the crop's height), DPT at 384x512."""
    import argparse

    sys.path.insert(0, str(REPO))
    from benchmarks.gpu_suite import Suite
    from pseudolabel.teachers import load_teacher
    from pseudolabel.tiny_teacher import save_tiny_teacher

    suite = Suite(argparse.Namespace(tiny=False, cpu=True, out=str(tmp_path / "suite.json"), label_runs=None))
    shutil.rmtree(suite.work)  # its scratch folder, unused here
    height, width = suite.size
    expected = {"depth_anything": (518, 686), "dpt": (384, 512)}
    for architecture, size in expected.items():
        folder = save_tiny_teacher(tmp_path / architecture, architecture)
        assert load_teacher(str(folder), short_side=suite.short_side).network_size(height, width) == size
