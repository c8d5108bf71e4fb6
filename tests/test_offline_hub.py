"""A name that could be a hub id, with the hub unreachable and ``HF_HUB_OFFLINE`` unset: one quick check, then one
line naming both readings (a local path, a hub id), instead of a minute of retry warnings; an id in the local cache
still loads. Each case runs the real command (``distill.evaluate``, ``pseudolabel.py``) in a process of its own,
pointed at an endpoint that refuses connections (port 9, discard)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shards.tools.scenes import write_scene_folder

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9"


def run_offline(cwd: Path, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """``python COMMAND`` with the hub unreachable, no offline variable set and an empty cache (unless ``cwd/hub``
    holds one); fails the test if it does not finish within ``timeout`` seconds."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=UNREACHABLE, HF_HOME=str(cwd / "hf_home"), HF_HUB_CACHE=str(cwd / "hub"),
               PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def evaluate_offline(cwd: Path, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return run_offline(cwd, "-m", "distill.evaluate", *argv, timeout=timeout)


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    write_scene_folder(tmp_path / "scenes", count=2, seed=7, width=128, height=96)
    return tmp_path / "scenes"


def test_a_missing_two_part_model_path_fails_at_once_naming_both_readings(tmp_path: Path, scenes: Path) -> None:
    result = evaluate_offline(tmp_path, "--model", "runs/name", "--data", str(scenes), "--out", "report")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) <= 3 and "Retrying" not in result.stderr
    assert "--model runs/name is neither a local path (no such folder) nor reachable on the Hugging Face hub" \
           in lines[-1]
    assert UNREACHABLE in lines[-1]
    assert not (tmp_path / "report").exists()


def test_a_mistyped_dataset_name_fails_at_once_naming_both_readings(tmp_path: Path) -> None:
    result = evaluate_offline(tmp_path, "--model", "constant", "--data", "nyu_depth_v2_mistyped", "--out", "report")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) <= 3 and "Retrying" not in result.stderr
    assert "--data nyu_depth_v2_mistyped is neither a local path (no such file or folder) nor reachable on the " \
           "Hugging Face hub" in lines[-1]
    assert UNREACHABLE in lines[-1]


def test_a_cached_hub_id_still_loads_when_the_hub_is_unreachable(tmp_path: Path, scenes: Path) -> None:
    """The check does not cost the user who downloaded a teacher before going offline: its id is read from the cache,
    with no retries."""
    from pseudolabel.tiny_teacher import save_tiny_teacher

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-dpt"
    save_tiny_teacher(tmp_path / "teacher", "dpt")
    shutil.copytree(tmp_path / "teacher", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    argv = ["--model", "tiny-org/tiny-dpt", "--data", str(scenes), "--out", "report", "--device", "cpu",
            "--crop", "none"]
    result = evaluate_offline(tmp_path, *argv, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Retrying" not in result.stderr
    record = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert record["count"] == 2 and 0 < record["metrics"]["abs_rel"] < 10


def test_a_teacher_id_neither_local_nor_cached_fails_at_once(tmp_path: Path, scenes: Path) -> None:
    """``pseudolabel.py --teacher.model org/name`` the same way: the teacher's own one line (not a local folder, not
    in the cache, the hub unreachable), with no retries, and no output folder."""
    argv = ["--teacher.model", "someorg/no-such-teacher", "--source.path", str(scenes / "rgb"), "--output.dir", "out"]
    result = run_offline(tmp_path, str(REPO / "pseudolabel.py"), *argv)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) <= 3 and "Retrying" not in result.stderr
    assert "teacher 'someorg/no-such-teacher' is neither a local model folder nor in the local Hugging Face cache" \
           in lines[-1]
    assert not (tmp_path / "out").exists()
