"""Launching a stage as several machines on this one: what a cluster runs, on localhost and CPU.

Each machine is its own ``accelerate launch --num_machines N --machine_rank R --main_process_ip 127.0.0.1`` with one
process; several CPU processes need ``ACCELERATE_USE_CPU=true`` and ``--multi_gpu`` (the plain form starts a single
process). Each launch gets its own session, so a test can SIGKILL one machine's launcher and its children.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def machine_environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO_ROOT), "ACCELERATE_USE_CPU": "true", **extra}


def launch_machines(script: str, arguments: list[str], machines: int = 2, **environment: str
                    ) -> list[subprocess.Popen]:
    """Start ``machines`` launches of ``script`` (one process each) that meet at a free localhost port."""
    port = str(free_port())
    launches = []
    for rank in range(machines):
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(machines), "--num_machines", str(machines), "--machine_rank", str(rank),
                   "--main_process_ip", "127.0.0.1", "--main_process_port", port, "--mixed_precision", "no",
                   "--dynamo_backend", "no", script, *arguments]
        log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would stall a machine the test is polling
        launch = subprocess.Popen(command, cwd=REPO_ROOT, env=machine_environment(**environment),
                                  start_new_session=True, stdout=log, stderr=subprocess.STDOUT, text=True)
        launch.log = log
        launches.append(launch)
    return launches


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (Linux ``/proc``): torchrun starts each worker in a session of its own, so a
    process-group kill of the launcher would leave the worker labelling on."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill(launch: subprocess.Popen) -> None:
    """SIGKILL a machine: its launcher and every process under it, as a node that dies."""
    if launch.poll() is None:
        for pid in [launch.pid, *_descendants(launch.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    launch.wait()


def wait_all(launches: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    """Each launch's exit code and output; a launch still running after ``timeout`` is killed (code -9)."""
    results = []
    for launch in launches:
        try:
            launch.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(launch)
        if not launch.log.closed:
            launch.log.seek(0)
            launch.output = launch.log.read()
            launch.log.close()
        results.append((launch.returncode, launch.output))
    return results
