"""Real processes: two Accelerate processes split the jobs; a SIGKILLed run resumes to every input exactly once.

Both launch ``pseudolabel.py`` as users do. Several CPU processes need ``ACCELERATE_USE_CPU=true accelerate launch
--multi_gpu --num_processes 2`` (the plain form starts one process: docs/library-notes.md, "Accelerate"). The
two-process run uses the ``identity`` teacher: how jobs are shared does not depend on the teacher, and importing
transformers in two more processes would double the test's time; the killed run uses the tiny DPT, whose compute
keeps it busy long enough.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np

from tests.launch import free_port, kill, launch_machines, wait_all
from tests.pseudolabel.conftest import REPO_ROOT
from tests.pseudolabel.test_run import SMOKE, input_keys_seen, label, read_samples


def _environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO_ROOT)}


def _arguments(source, teacher, out, *extra: str) -> list[str]:
    return ["--config", SMOKE, "--source.path", str(source), "--teacher.model", str(teacher), "--output.dir", str(out),
            "--runtime.progress", "false", *extra]


TWO_PROCESS_RUN = ("--source.sample_count", "16", "--output.samples_per_shard", "2", "--runtime.num_workers", "0",
                   "--preprocess.width", "128", "--preprocess.height", "96", "--teacher.short_side", "96")


def test_two_processes_label_the_same_keys_as_one(scene_folder, tmp_path):
    out_two, out_one = tmp_path / "two", tmp_path / "one"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "pseudolabel.py",
               *_arguments(scene_folder, "identity", out_two, *TWO_PROCESS_RUN)]
    launched = subprocess.run(command, cwd=REPO_ROOT, env={**_environment(), "ACCELERATE_USE_CPU": "true"},
                              capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert label(scene_folder, "identity", out_one, *TWO_PROCESS_RUN) == 0

    summary = json.loads((out_two / "summary.json").read_text())
    run = summary["this_run"]
    assert run["world_size"] == 2, "the two processes did not see each other"
    jobs = {process["process"]: process["jobs"] for process in run["processes"]}
    assert sorted(jobs) == [0, 1] and all(jobs.values()), f"each rank must label its own jobs: {jobs}"
    assert sorted(jobs[0] + jobs[1]) == list(range(8)) and not set(jobs[0]) & set(jobs[1])
    writers = {path.name.split("-")[1] for path in out_two.glob("*.tar")}
    assert writers == {"000", "001"}

    keys_two, keys_one = input_keys_seen(out_two), input_keys_seen(out_one)
    assert len(keys_two) == len(set(keys_two)) == 16
    assert sorted(keys_two) == sorted(keys_one)
    two, one = read_samples(out_two), read_samples(out_one)
    for key in one:  # the same samples, whichever process made them
        assert np.array_equal(two[key].depth, one[key].depth) and np.array_equal(two[key].image, one[key].image)


def test_sigkill_midway_then_rerun_gives_every_input_exactly_once(tiny_teachers, scene_folder, tmp_path):
    out = tmp_path / "out"
    run = ("--source.sample_count", "0", "--output.samples_per_shard", "2", "--runtime.num_workers", "1",
           "--preprocess.width", "128", "--preprocess.height", "96", "--teacher.short_side", "96")
    jobs = 12  # 24 scenes, 2 per job
    process = subprocess.Popen([sys.executable, "pseudolabel.py", *_arguments(scene_folder, tiny_teachers["dpt"],
                                                                               out, *run)],
                               cwd=REPO_ROOT, env=_environment(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while not list(out.glob("*.stats.json")):
            assert process.poll() is None, f"the run ended before its first shard: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no shard finished in 300 s"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)  # the run and its DataLoader worker, as a crashed node
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = len(list(out.glob("*.stats.json")))
    print(f"jobs finished at the kill: {finished} of {jobs}")
    assert 1 <= finished < jobs, f"{finished} of {jobs} jobs done at the kill: not midway"

    assert label(scene_folder, tiny_teachers["dpt"], out, *run) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["this_run"]["jobs"] == jobs - finished
    keys = input_keys_seen(out)
    assert Counter(keys) == Counter(f"scene_{index:06d}" for index in range(24))
    assert not list(out.glob("*.tmp"))


def _machines_args(source, teacher, out, *extra: str) -> list[str]:
    return _arguments(source, teacher, out, "--output.samples_per_shard", "2", "--preprocess.width", "128",
                      "--preprocess.height", "96", "--teacher.short_side", "96", *extra)


def _assert_ran(results: list[tuple[int, str]]) -> None:
    for rank, (code, output) in enumerate(results):
        assert code == 0, f"machine {rank} exited {code}:\n{output[-3000:]}"


def test_two_machines_label_every_input_exactly_once(scene_folder, tmp_path):
    """Two launches on localhost as machine 0 and 1 (one process each) and one shared output folder: the main
    process writes the sorted index, the other machine reads its jobs from it."""
    out = tmp_path / "shared"
    _assert_ran(wait_all(launch_machines("pseudolabel.py", _machines_args(
        scene_folder, "identity", out, "--source.sample_count", "16", "--runtime.num_workers", "0"))))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["this_run"]["world_size"] == 2
    jobs = {process["process"]: process["jobs"] for process in summary["this_run"]["processes"]}
    assert sorted(jobs[0] + jobs[1]) == list(range(8)) and jobs[0] and jobs[1]
    assert {path.name.split("-")[1] for path in out.glob("*.tar")} == {"000", "001"}
    keys = input_keys_seen(out)
    assert len(keys) == len(set(keys)) == 16


def _image_shards(scene_folder, folder, shards: int = 4):
    """The 24 scenes as ``shards`` image shards (the form large collections come in)."""
    import webdataset as wds

    folder.mkdir()
    scenes = sorted(scene_folder.glob("*.png"))
    per_shard = len(scenes) // shards
    for shard in range(shards):
        with wds.TarWriter(str(folder / f"images-{shard:06d}.tar")) as sink:
            for path in scenes[shard * per_shard : (shard + 1) * per_shard]:
                sink.write({"__key__": path.stem, "png": path.read_bytes()})
    return folder


def test_two_machines_resume_after_one_is_killed(tiny_teachers, scene_folder, tmp_path):
    """Image shards over two machines; machine 1 is SIGKILLed once it has finished a job; the other stops or is
    stopped (as a cluster stops the job); a rerun of both completes with every input exactly once."""
    source, out = _image_shards(scene_folder, tmp_path / "images"), tmp_path / "shared"
    arguments = _machines_args(source, tiny_teachers["dpt"], out, "--runtime.num_workers", "1", "--source.kind",
                               "shards")
    launches = launch_machines("pseudolabel.py", arguments)
    deadline = time.monotonic() + 300
    try:
        while not list(out.glob("train-001-*.stats.json")):
            assert all(launch.poll() is None for launch in launches), wait_all(launches, timeout=1)
            assert time.monotonic() < deadline, "machine 1 finished no job in 300 s"
            time.sleep(0.01)
        kill(launches[1])
    finally:
        wait_all(launches, timeout=120)
    finished = len(list(out.glob("*.stats.json")))
    print(f"jobs finished at the kill: {finished} of 12")
    assert 1 <= finished < 12, f"{finished} of 12 jobs done at the kill: not midway"

    _assert_ran(wait_all(launch_machines("pseudolabel.py", arguments)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["this_run"]["world_size"] == 2
    assert summary["this_run"]["jobs"] == 12 - finished
    assert Counter(input_keys_seen(out)) == Counter(f"images/scene_{index:06d}" for index in range(24))
    assert not list(out.glob("*.tmp"))
