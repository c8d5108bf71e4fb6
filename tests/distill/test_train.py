"""The training stage: configs, overfitting, exact resume, signals, the non-finite guard, two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.utils import set_seed
from safetensors.torch import load_file

from distill.cli import COMMAND, main
from distill.students import ARCHITECTURES, create_student, load_student
from distill.training import train as train_module
from distill.training.checkpoint import COMPLETE_MARKER, list_checkpoints
from distill.training.config import MAX_WARMUP_SHARE, DistillConfig, LossConfig
from distill.training.data import EvalTransform, batch_in_space, collate_samples
from distill.training.losses import build_loss
from shards.cli.config import load_config
from shards.format import METRIC_DEPTH
from shards.reader import build_pipeline
from tests.distill.conftest import TINY_STUDENT, tiny_student_config, torch_threads, write_scene_shards
from tests.launch import launch_machines, machine_environment, wait_all

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "distill").glob("*.yaml"))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two shared cores: one intra-op thread per process avoids spinning thread pools fighting each other."""
    with torch_threads(1):
        yield


def _argv(output: Path, train: Path, *extra: str, val: Path | None = None) -> list[str]:
    argv = [
        "--student.encoder", TINY_STUDENT["encoder"], "--student.pretrained", "false",
        "--student.decoder_widths", json.dumps(TINY_STUDENT["decoder_widths"]),
        "--data.train", str(train), "--data.size", "[64, 64]", "--data.batch_size", "4", "--data.num_workers", "0",
        "--data.shuffle_buffer", "8", "--data.epoch_steps", "4",
        "--optim.lr", "0.003", "--optim.warmup_steps", "2",
        "--train.ema_decay", "0.9", "--checkpoint.every", "5", "--checkpoint.keep", "2",
        "--log.every", "1", "--log.images_every", "5", "--log.val_every", "5", "--log.tensorboard", "false",
        "--output.dir", str(output),
    ]
    if val is not None:
        argv += ["--data.val", str(val)]
    return argv + list(extra)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipes_load_against_the_schema(path: Path) -> None:
    config = load_config(DistillConfig, path)
    assert config.data.size[0] % 32 == 0 and config.student.architecture in ARCHITECTURES
    if path.stem == "smoke":
        assert config.student.pretrained is False  # CPU smoke: random init, said so in the file
    if path.stem == "places365_fastdepth":  # the reference recipe is the schema's defaults, apart from shard paths
        defaults = DistillConfig()
        assert config.student.resolved() == defaults.student.resolved()
        for section in ("loss", "optim", "train", "checkpoint"):
            assert getattr(config, section) == getattr(defaults, section), section
    assert {p.stem for p in CONFIGS} >= {"places365_fastdepth", "smoke", "fastdepth_original"}


def test_overfitting_eight_samples(relative_shards) -> None:
    """Student + loss + AdamW on a fixed batch of the 8 shard samples: the loss falls by at least 10x."""
    samples = [EvalTransform([64, 32])(s) for s in build_pipeline(str(relative_shards), training=False, split=False)]
    batch = batch_in_space(collate_samples(samples), "inverse_depth")
    assert len(samples) == 8
    torch.manual_seed(0)
    model = create_student(tiny_student_config(decoder_widths=[64, 32, 32, 16, 16]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    loss_fn = build_loss(LossConfig())
    losses = []
    for _ in range(150):
        loss = loss_fn(model(batch["image"]), batch["target"], batch["valid"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] / min(losses[-5:]) >= 10.0, (losses[0], losses[-5:])


def test_resume_equals_uninterrupted(tmp_path, relative_shards, metric_shards) -> None:
    """20 steps in one run == 10 steps, stop, resume 10 (inside a data epoch: 10 % 4 != 0)."""
    train_sets = f"[{relative_shards}, {metric_shards}]"
    straight = tmp_path / "straight"
    assert main(_argv(straight, train_sets, "--train.steps", "20")) == 0
    split = tmp_path / "split"
    assert main(_argv(split, train_sets, "--train.steps", "20", "--train.stop_after", "10")) == 0
    assert [p.name for p in list_checkpoints(split)] == ["step_00000005", "step_00000010"]
    assert not (split / "student").exists()  # not finished yet
    assert main(_argv(split, train_sets, "--train.steps", "20", "--resume", "latest")) == 0

    assert [p.name for p in list_checkpoints(split)] == ["step_00000015", "step_00000020"]  # keep 2
    name = "step_00000020/model.safetensors"  # the raw weights
    a, b = load_file(straight / "checkpoints" / name), load_file(split / "checkpoints" / name)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    student_a, _ = load_student(straight / "student")  # EMA weights: restored EMA state too
    student_b, _ = load_student(split / "student")
    for (key, a), b in zip(student_a.state_dict().items(), student_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)
    losses_a = {r["step"]: r["train/loss"] for r in _jsonl(straight / "metrics.jsonl")}
    losses_b = {r["step"]: r["train/loss"] for r in _jsonl(split / "metrics.jsonl")}
    assert sorted(losses_b) == list(range(1, 21))
    for step in range(1, 21):
        assert losses_a[step] == pytest.approx(losses_b[step], rel=1e-4), step


class _LossWith:
    """Wraps the real loss: NaN at the given calls, or SIGTERM to this process at one call."""

    @classmethod
    def factory(cls, **options):
        """A stand-in for ``distill.training.train.build_loss`` that wraps what the real one builds."""
        return lambda config: cls(build_loss(config), **options)

    def __init__(self, real, nan_calls=(), sigterm_call=None) -> None:
        self.real, self.nan_calls, self.sigterm_call, self.calls = real, set(nan_calls), sigterm_call, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        parts = self.real(*args, **kwargs)
        if self.calls in self.nan_calls or "all" in self.nan_calls:
            parts["loss"] = parts["loss"] * float("nan")
        if self.calls == self.sigterm_call:
            os.kill(os.getpid(), signal.SIGTERM)
        return parts


def test_non_finite_steps_are_skipped_and_counted(tmp_path, relative_shards, monkeypatch) -> None:
    monkeypatch.setattr(train_module, "build_loss", _LossWith.factory(nan_calls={3, 4}))
    output = tmp_path / "run"
    assert main(_argv(output, relative_shards, "--train.steps", "6")) == 0
    records = _jsonl(output / "metrics.jsonl")
    assert [r["train/skipped_nonfinite"] for r in records] == [0, 0, 1, 2, 2, 2]
    model, _ = load_student(output / "student")
    assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def test_too_many_non_finite_steps_stop_the_run(tmp_path, relative_shards, monkeypatch, capsys) -> None:
    monkeypatch.setattr(train_module, "build_loss", _LossWith.factory(nan_calls={"all"}))
    argv = _argv(tmp_path / "run", relative_shards, "--train.steps", "10", "--train.max_consecutive_nonfinite", "3")
    assert main(argv) == 1
    assert "3 non-finite steps in a row" in capsys.readouterr().err


def test_sigterm_checkpoints_then_resume_continues(tmp_path, relative_shards, monkeypatch) -> None:
    output = tmp_path / "run"
    monkeypatch.setattr(train_module, "build_loss", _LossWith.factory(sigterm_call=3))
    assert main(_argv(output, relative_shards, "--train.steps", "7")) == 128 + signal.SIGTERM
    assert [p.name for p in list_checkpoints(output)] == ["step_00000003"]
    assert (output / "checkpoints" / "step_00000003" / COMPLETE_MARKER).is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.setattr(train_module, "build_loss", build_loss)
    (output / "checkpoints" / ".tmp-step_00000099").mkdir()  # a save killed half-way: removed, never resumed
    assert main(_argv(output, relative_shards, "--train.steps", "7", "--resume", "latest")) == 0
    assert [r["step"] for r in _jsonl(output / "metrics.jsonl")] == list(range(1, 8))
    assert not (output / "checkpoints" / ".tmp-step_00000099").exists()


def test_resume_from_an_incomplete_folder_is_refused(tmp_path, relative_shards, capsys) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    assert main(_argv(tmp_path / "run", relative_shards, "--resume", str(partial))) == 2
    assert "not a complete checkpoint" in capsys.readouterr().err


def test_validation_picks_best_and_logs(tmp_path, relative_shards, val_shards) -> None:
    output = tmp_path / "run"
    extra = ("--train.steps", "10", "--log.tensorboard", "true", "--log.write_val_keys", "true")
    assert main(_argv(output, relative_shards, *extra, val=val_shards)) == 0
    validations = _jsonl(output / "validation.jsonl")
    assert [v["step"] for v in validations] == [5, 10]
    assert all(v["samples"] == 12 and "abs_rel_inv" in v and "delta1_inv" in v for v in validations)
    assert (output / "best" / "model.safetensors").is_file() and (output / "student" / "config.json").is_file()
    assert (output / "config.yaml").read_text().count("write_val_keys: true") == 1  # resolved config saved
    events = list((output / "logs").rglob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 10_000  # scalars and image grids went somewhere


def test_unknown_option_is_rejected_by_name(capsys) -> None:
    assert main(["--data.trian", "x"]) == 2
    assert "trian" in capsys.readouterr().err


def test_two_processes_split_validation_exactly(tmp_path, relative_shards, val_shards) -> None:
    """``accelerate launch --multi_gpu --num_processes 2`` on CPU: both ranks train, validation sees every held-out
    sample exactly once across the two ranks, each rank its own part."""
    accelerate = Path(sys.executable).with_name("accelerate")
    output = tmp_path / "ddp"
    argv = _argv(output, relative_shards, "--train.steps", "4", "--log.val_every", "2", "--log.write_val_keys", "true",
                 "--checkpoint.every", "2", val=val_shards)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "distill.py", *argv]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = sorted(s.key for s in build_pipeline(str(val_shards), training=False, split=False))
    for record in _jsonl(output / "validation.jsonl"):
        assert record["world_size"] == 2
        counts = record["samples_per_rank"]
        assert sorted(counts) == ["0", "1"] and all(n > 0 for n in counts.values()) and sum(counts.values()) == 12
        keys = (output / f"val_keys_{record['step']:08d}.txt").read_text().split()
        assert sorted(keys) == expected  # every sample once: no duplicate, none missing
    assert (output / "checkpoints" / "step_00000004" / "random_states_1.pkl").is_file()  # rank 1 saved its RNG
    load_student(output / "student")


def test_two_processes_train_a_student_with_auxiliary_outputs(tmp_path, relative_shards, val_shards) -> None:
    """RT-MonoDepth-S with its coarse map and the coarse RMSE term under two CPU processes: DDP carries the
    ``return_aux`` call and the extra head's gradients; both ranks train and validate their own part."""
    accelerate = Path(sys.executable).with_name("accelerate")
    output = tmp_path / "ddp_aux"
    argv = [
        "--student.architecture", "rt_monodepth_s", "--student.coarse_head", "true",
        "--loss.name", "l1", "--loss.invariant", "true", "--loss.coarse_weight", "0.5",
        "--data.train", str(relative_shards), "--data.val", str(val_shards), "--data.size", "[64, 64]",
        "--data.batch_size", "2", "--data.num_workers", "0", "--data.shuffle_buffer", "4", "--data.epoch_steps", "2",
        "--optim.warmup_steps", "1", "--train.steps", "2", "--checkpoint.every", "2", "--log.every", "1",
        "--log.images_every", "0", "--log.val_every", "0", "--log.tensorboard", "false", "--output.dir", str(output),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "distill.py", *argv]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = _jsonl(output / "validation.jsonl")
    assert record["world_size"] == 2 and all(n > 0 for n in record["samples_per_rank"].values())
    logged = [line for line in _jsonl(output / "metrics.jsonl") if "train/coarse" in line]
    assert len(logged) == 2 and all(line["train/coarse"] > 0 for line in logged)
    model, config = load_student(output / "student")
    assert config.coarse_head and model.coarse is not None


def _step_hashes(folder: Path, rank: int) -> list[dict]:
    return _jsonl(folder / f"rank{rank}.jsonl")


def test_two_machines_train_in_step_and_resume_on_both(tmp_path, relative_shards) -> None:
    """Two launches on localhost as machine 0 and 1 (one process each, a shared output folder): both see a world of
    2, the parameters hash the same on both ranks after every optimizer step, and a resume from the checkpoint
    continues on both."""
    output, hashes = tmp_path / "shared", tmp_path / "hashes"
    hashes.mkdir()
    script = str(Path(__file__).with_name("hashed_train.py"))
    argv = _argv(output, relative_shards, "--train.steps", "4", "--checkpoint.every", "2", "--log.images_every", "0")
    for extra in (("--train.stop_after", "2"), ("--resume", "latest")):
        results = wait_all(launch_machines(script, [*argv, *extra], PARAM_HASH_DIR=str(hashes)))
        for rank, (code, log) in enumerate(results):
            assert code == 0, f"machine {rank} exited {code}:\n{log[-3000:]}"
    ranks = [_step_hashes(hashes, rank) for rank in (0, 1)]
    assert all(record["world"] == 2 and record["rank"] == rank for rank in (0, 1) for record in ranks[rank])
    assert [record["step"] for record in ranks[0]] == [record["step"] for record in ranks[1]] == [1, 2, 3, 4]
    assert [record["sha256"] for record in ranks[0]] == [record["sha256"] for record in ranks[1]]
    assert len({record["sha256"] for record in ranks[0]}) == 4  # the weights moved at every step
    assert [record["step"] for record in _jsonl(output / "metrics.jsonl")] == [1, 2, 3, 4]
    assert [path.name for path in list_checkpoints(output)] == ["step_00000002", "step_00000004"]
    assert (output / "checkpoints" / "step_00000004" / "random_states_1.pkl").is_file()


LOOP_FILES = (str(REPO / "distill" / "training" / "train.py"),)  # the loop, its optimizer step, its figures
HOST_READS = ("__float__", "__bool__", "__int__", "__index__", "item", "tolist", "cpu", "numpy")


def test_the_loop_reads_the_host_only_at_log_and_check_steps(tmp_path, relative_shards, monkeypatch) -> None:
    """A host read of a device tensor (float(), bool(), .item(), ...) stalls a GPU until its queue drains: the loop
    may do it at log intervals and stop-flag checks only. Counted here by wrapping the tensor methods that read
    values and attributing each call made from the loop's own files to the step in progress."""
    reads: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller in LOOP_FILES:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    reads_per_step: list[int] = []

    class StepCounter(train_module.tqdm):
        """update() closes each step's update: entry s holds the reads of step s after its update() (logging and
        stop checks come there) and of step s + 1 before it."""

        def update(self, n=1):
            reads_per_step.append(len(reads) - sum(reads_per_step))
            return super().update(n)

    monkeypatch.setattr(train_module, "tqdm", StepCounter)
    argv = _argv(tmp_path / "run", relative_shards, "--train.steps", "12", "--log.every", "6",
                 "--log.images_every", "0", "--checkpoint.every", "1000", "--train.ema_decay", "0.9")
    assert main(argv) == 0
    assert train_module.STOP_CHECK_STEPS == 10
    # steps 1-5, 7-9, 11 neither log nor check the stop flag; step 12 ends the run
    quiet = [reads_per_step[step] for step in (1, 2, 3, 4, 5, 7, 8, 9, 11)]
    assert quiet == [0] * 9, reads_per_step
    assert reads_per_step[6] >= 1 and reads_per_step[10] >= 1  # the log at 6, the stop check at 10


def test_flags_before_the_config_file_win(tmp_path) -> None:
    """Issue 24: ``--output.dir A --config configs/distill/demo.yaml`` trains into A, not the recipe's
    ``demo_out/distill`` (the flag stands before the file, which used to override it)."""
    recipe = REPO / "configs" / "distill" / "demo.yaml"
    assert load_config(DistillConfig, recipe).output.dir == "demo_out/distill"
    wanted = str(tmp_path / "mine")
    for argv in (["--output.dir", wanted, "--config", str(recipe)], ["--output.dir", wanted, f"--config={recipe}"],
                 ["--config", str(recipe), "--output.dir", wanted]):
        config, resolved = COMMAND.parse(argv)
        assert config.output.dir == wanted and yaml.safe_load(resolved)["output"]["dir"] == wanted, argv
        assert config.train.steps == 400  # the file's other keys still apply


def _short_run_argv(output: Path, train: Path, *extra: str) -> list[str]:
    """A tiny student for 30 steps with the reference recipe's warm-up (1000 steps) and EMA decay (0.999)."""
    return [
        "--student.encoder", TINY_STUDENT["encoder"], "--student.pretrained", "false",
        "--student.decoder_widths", json.dumps(TINY_STUDENT["decoder_widths"]),
        "--data.train", str(train), "--data.size", "[64, 64]", "--data.batch_size", "4", "--data.num_workers", "0",
        "--data.shuffle_buffer", "8", "--data.epoch_steps", "10", "--train.steps", "30", "--log.every", "1",
        "--log.images_every", "0", "--log.tensorboard", "false", "--checkpoint.every", "1000",
        "--output.dir", str(output), *extra,
    ]


def _distance(weights: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> float:
    """L2 distance of the learned weights (BatchNorm running statistics left out) from ``start``."""
    keys = [k for k, v in start.items() if v.is_floating_point() and "running_" not in k]
    return float(torch.cat([(weights[k].float() - start[k].float()).flatten() for k in keys]).norm())


def test_a_short_run_trains_at_its_peak_rate_and_its_ema_follows(tmp_path, relative_shards) -> None:
    """Issue 24: ``--train.steps 30`` with the 1000-step warm-up and EMA decay 0.999 used to end at lr 3e-5 with the
    saved (EMA) student near its random start. The warm-up is cut to 5% of the run, the EMA warms up with the run,
    and config.yaml says so."""
    output = tmp_path / "run"
    assert main(_short_run_argv(output, relative_shards)) == 0
    resolved = yaml.safe_load((output / "config.yaml").read_text())
    assert resolved["optim"]["warmup_steps"] == int(MAX_WARMUP_SHARE * 30) == 1  # the steps used, not the 1000 given
    assert resolved["train"]["ema_decay"] == 0.999 and resolved["train"]["ema_warmup_power"] == 0.75
    rates = {r["step"]: r["train/lr"] for r in _jsonl(output / "metrics.jsonl")}
    peak = resolved["optim"]["lr"]
    assert max(rates.values()) == pytest.approx(peak, rel=0.05)  # was 3.1e-5: the warm-up never ended
    assert rates[15] > 0.4 * peak  # half-way through the cosine, not a thirtieth of the warm-up
    set_seed(0)  # as the run seeds before building the student: its initial weights
    start = create_student(tiny_student_config()).state_dict()
    raw = load_file(output / "checkpoints" / "step_00000030" / "model.safetensors")
    ema, _ = load_student(output / "student")
    moved, raw_moved = _distance(ema.state_dict(), start), _distance(raw, start)
    assert raw_moved > 0.1 and moved > 0.5 * raw_moved, (moved, raw_moved)  # was 0.12x with a constant decay


def test_an_output_folder_holding_a_run_is_refused_unless_resuming(tmp_path, relative_shards, capsys) -> None:
    """Issue 24: a second run into the same --output.dir used to write its checkpoints beside the first run's and
    replace its student; it is refused before anything is written, naming what is there, unless --resume."""
    output = tmp_path / "run"
    assert main(_argv(output, relative_shards, "--train.steps", "2", "--checkpoint.every", "2")) == 0
    student = (output / "student" / "model.safetensors").read_bytes()
    before = sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    capsys.readouterr()
    assert main(_argv(output, relative_shards, "--train.steps", "3", "--checkpoint.every", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"distill.py: error: --output.dir {output} already holds ")
    assert "checkpoints/" in err[0] and "student/" in err[0] and "--resume latest" in err[0]
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == before  # nothing written
    assert (output / "student" / "model.safetensors").read_bytes() == student
    assert main(_argv(output, relative_shards, "--train.steps", "3", "--resume", "latest")) == 0
    assert [p.name for p in list_checkpoints(output)] == ["step_00000002", "step_00000003"]


@pytest.mark.parametrize("role", ["train", "val"])
def test_an_error_in_a_loader_worker_ends_the_run_with_its_own_line(tmp_path, relative_shards, role: str) -> None:
    """Issue 24: test-split shards in --data.train or --data.val with loader workers: the run printed the worker's
    whole traceback as its "one line" and then waited on the worker for ever. It ends at once, exit 2, the
    worker's own message as one line."""
    test_split = tmp_path / "nyu_test"
    write_scene_shards(test_split, METRIC_DEPTH, shards=1, prefix="nyutest", meta={"eval_split": "nyu_test"})
    train, val = (test_split, None) if role == "train" else (relative_shards, test_split)
    argv = _argv(tmp_path / "run", train, "--train.steps", "2", "--data.num_workers", "1", val=val)
    try:
        done = subprocess.run([sys.executable, "distill.py", *argv], cwd=REPO, env=machine_environment(),
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"distill.py still running after 120 s: {expired.stderr}")
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    reader = "training" if role == "train" else "validation"
    assert errors[0].startswith(f"distill.py: error: {test_split}/nyutest-000-000000.tar: sample ")
    assert f"evaluation split 'nyu_test', which {reader} does not read" in errors[0]
    assert "Traceback" not in done.stderr and "DataLoader worker" not in done.stderr
