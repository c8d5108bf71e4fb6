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
import socket
import subprocess
import sys
import time
from collections import Counter

import numpy as np

from tests.pseudolabel.conftest import REPO_ROOT
from tests.pseudolabel.test_run import SMOKE, input_keys_seen, label, read_samples


def _environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO_ROOT)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _arguments(source, teacher, out, *extra: str) -> list[str]:
    return ["--config", SMOKE, "--source.path", str(source), "--teacher.model", str(teacher), "--output.dir", str(out),
            "--runtime.progress", "false", *extra]


TWO_PROCESS_RUN = ("--source.sample_count", "16", "--output.samples_per_shard", "2", "--runtime.num_workers", "0",
                   "--preprocess.width", "128", "--preprocess.height", "96", "--teacher.short_side", "96")


def test_two_processes_label_the_same_keys_as_one(scene_folder, tmp_path):
    out_two, out_one = tmp_path / "two", tmp_path / "one"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "pseudolabel.py",
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
