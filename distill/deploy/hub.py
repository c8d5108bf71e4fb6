"""Publishing a student: ``save_pretrained`` writes the student folder (the format training writes, so every tool
reads it) with its model card, and ``push_to_hub`` uploads that folder with ``huggingface_hub.HfApi``.

The model card is ``README.md`` with YAML metadata that the Hugging Face Hub reads (library, pipeline tag, licence,
data sets, evaluation results) and the facts a user needs before running it: architecture, input size, what the
output holds, the teacher and its licence, the training data, the evaluation table with its protocol, and the
exported formats with their parity. Facts the folder cannot tell are passed in; those a training run left behind are
read from it: the run's resolved ``config.yaml`` beside the ``student/`` folder names the training shards, whose
``manifest.json`` names the teacher.

Only students are saved: exported files are published as they are, and teachers belong to their own authors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.students import StudentConfig, save_student, student_output_kind

logger = logging.getLogger(__name__)

#: Any object with a DepthModel's ``source``, ``name``, ``location``, ``runner``, ``width`` and ``height`` (typed
#: loosely: the model module calls this one, and the import rules forbid the circle back).
DepthModel = Any

CARD_NAME = "README.md"

#: Licences of the teachers the project documents (from the teachers' hub pages); others are passed in.
TEACHER_LICENSES = {
    "depth-anything/Depth-Anything-V2-Small-hf": "apache-2.0",
    "depth-anything/Depth-Anything-V2-Base-hf": "cc-by-nc-4.0",
    "depth-anything/Depth-Anything-V2-Large-hf": "cc-by-nc-4.0",
    "Intel/dpt-large": "apache-2.0",
    "Intel/dpt-hybrid-midas": "apache-2.0",
}
LIBRARY_NAME = "depth-distill"
#: The metrics shown in the card's evaluation table, in the reference table's order.
CARD_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")


@dataclass
class CardFacts:
    """What a card says beyond the student's own config. ``evaluations``: ``metrics.json`` records (or their
    paths) written by ``evaluate``; ``exports``: the ``<file>.json`` records written by the export command."""

    teacher: str | None = None
    teacher_license: str | None = None
    training_data: list[str] = field(default_factory=list)
    license: str = "mit"
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)
    description: str | None = None


def _record(item: dict | str | os.PathLike) -> dict[str, Any]:
    return item if isinstance(item, dict) else json.loads(Path(item).read_text())


def facts_from_run(student_folder: str | os.PathLike) -> CardFacts:
    """Teacher and training data of a student saved by training (``RUN/student``), read from ``RUN/config.yaml``
    and the training shards' ``manifest.json``; empty facts for a folder that is not in a run."""
    config_path = Path(student_folder).resolve().parent / "config.yaml"
    if not config_path.is_file():
        return CardFacts()
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as error:
        logger.warning("model card: %s is not readable YAML (%s); teacher and data left out", config_path, error)
        return CardFacts()
    train = (config.get("data") or {}).get("train") or []
    sets = [train] if isinstance(train, str) else list(train)
    facts = CardFacts(training_data=[str(item) for item in sets])
    for shard_set in sets:
        manifest = Path(str(shard_set).split(",")[0]) / "manifest.json"
        if manifest.is_file():
            teacher = (json.loads(manifest.read_text()).get("teacher") or {}).get("teacher")
            if teacher:
                facts.teacher = teacher
                break
    return facts


def card_metadata(config: StudentConfig, width: int, height: int, facts: CardFacts) -> dict[str, Any]:
    """The card's YAML header: the hub's own keys plus ours (``architecture``, ``input_size``, ``output``...)."""
    teacher_license = facts.teacher_license or TEACHER_LICENSES.get(facts.teacher or "")
    metadata: dict[str, Any] = {
        "library_name": LIBRARY_NAME,
        "pipeline_tag": "depth-estimation",
        "license": facts.license,
        "tags": ["depth-estimation", "monocular-depth", "knowledge-distillation", config.architecture],
        "architecture": config.architecture,
        "encoder": config.encoder,
        "input_size": {"width": width, "height": height},
        "input": "RGB float in [0, 1], (B, 3, H, W); normalisation is inside the model",
        "output": student_output_kind(config),
        "teacher": {"model": facts.teacher, "license": teacher_license},
        "training_data": facts.training_data,
    }
    if facts.teacher:
        metadata["base_model"] = facts.teacher
    if facts.evaluations:
        metadata["evaluation"] = [_evaluation_entry(_record(item)) for item in facts.evaluations]
    if facts.exports:
        metadata["exports"] = [_export_entry(_record(item)) for item in facts.exports]
    return metadata


def _evaluation_entry(record: dict[str, Any]) -> dict[str, Any]:
    protocol = record.get("protocol") or {}
    data = record.get("data") or {}
    metrics = record.get("metrics") or {}
    return {
        "data": data.get("name") or data.get("path") or str(data),
        "protocol": protocol.get("name"),
        "alignment": protocol.get("alignment"),
        "count": record.get("count"),
        "metrics": {name: round(float(metrics[name]), 4) for name in CARD_METRICS if name in metrics},
    }


def _export_entry(record: dict[str, Any]) -> dict[str, Any]:
    parity = record.get("parity") or {}
    cases = parity.get("cases") or []
    worst = max((case.get("relative_difference", 0.0) for case in cases), default=None)
    entry = {
        "format": record.get("format", "onnx"),
        "file": Path(str(record.get("file") or record.get("onnx") or "")).name,
        "precision": record.get("precision", "fp32"),
        "parity_max_diff_over_range": worst,
        "parity_tolerance": parity.get("tolerance"),
        "runtime": parity.get("runtime"),
    }
    if "abs_rel_drop" in record:
        entry["abs_rel_drop"] = record["abs_rel_drop"]
    return entry


def card_text(metadata: dict[str, Any], name: str, description: str | None = None) -> str:
    """The whole README.md: YAML header, then the same facts for people, with the three-line Python use."""
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    size = metadata["input_size"]
    teacher = metadata["teacher"]
    lines = [
        f"---\n{header}---\n",
        f"# {name}\n",
        description or "A real-time monocular depth student distilled from a large teacher's pseudo-labels.",
        "",
        f"- Architecture: `{metadata['architecture']}` (encoder `{metadata['encoder']}`)",
        f"- Input: {size['width']}x{size['height']} (W x H), {metadata['input']}",
        f"- Output: `{metadata['output']}`",
        f"- Teacher: {teacher['model'] or 'not recorded'} (licence: {teacher['license'] or 'not recorded'})",
        f"- Training data: {', '.join(metadata['training_data']) or 'not recorded'}",
        "",
        "```python",
        "from distill import DepthModel",
        'model = DepthModel.from_pretrained("<this repository or folder>")',
        'depth = model.predict("room.jpg")  # .values: float32 (H, W) at the picture size; .image(): colours',
        "```",
        "",
    ]
    if metadata.get("evaluation"):
        columns = [name for name in CARD_METRICS if any(name in e["metrics"] for e in metadata["evaluation"])]
        lines += ["## Evaluation", "", "| data | protocol | alignment | images | " + " | ".join(columns) + " |"]
        lines.append("|" + "---|" * (4 + len(columns)))
        for entry in metadata["evaluation"]:
            values = " | ".join(f"{entry['metrics'].get(name, float('nan')):.3f}" for name in columns)
            row = f"| {entry['data']} | {entry['protocol']} | {entry['alignment']} | {entry['count']} | {values} |"
            lines.append(row)
        lines.append("")
    if metadata.get("exports"):
        lines += ["## Exported files", "", "| format | file | precision | parity (max diff / range) | ΔAbsRel |"]
        lines.append("|---|---|---|---|---|")
        for entry in metadata["exports"]:
            parity = entry["parity_max_diff_over_range"]
            shown = "not run here" if parity is None else f"{parity:.1e}"
            drop = entry.get("abs_rel_drop")
            lines.append(
                f"| {entry['format']} | {entry['file']} | {entry['precision']} | {shown} | "
                f"{'' if drop is None else f'{drop:+.4f}'} |"
            )
        lines.append("")
    return "\n".join(lines)


def _card_facts(model: DepthModel, card: dict[str, Any]) -> CardFacts:
    """Facts given by the caller, completed by what the run around the loaded folder recorded."""
    unknown = sorted(set(card) - {f.name for f in dataclasses.fields(CardFacts)})
    if unknown:
        raise TypeError(f"unknown model card facts {unknown}; known: {[f.name for f in dataclasses.fields(CardFacts)]}")
    found = facts_from_run(model.location) if model.location else CardFacts()
    given = CardFacts(**card)
    return dataclasses.replace(
        given,
        teacher=given.teacher or found.teacher,
        training_data=given.training_data or found.training_data,
    )


def save_pretrained(model: DepthModel, folder: str | os.PathLike, title: str | None = None, **card: Any) -> Path:
    """``folder/config.json``, ``model.safetensors`` and ``README.md`` (the card, headed ``title`` or the folder's
    name) of a student model."""
    if model.source != "student":
        raise ValueError(
            f"save_pretrained writes students; {model.name} is a {model.source} model (publish an exported file as "
            "it is, and a teacher from its own repository)"
        )
    runner = model.runner
    folder = save_student(runner.model, runner.config, folder)
    facts = _card_facts(model, card)
    metadata = card_metadata(runner.config, model.width, model.height, facts)
    (folder / CARD_NAME).write_text(card_text(metadata, title or folder.name, facts.description))
    return folder


def push_to_hub(
    model: DepthModel,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload depth-distill student",
    revision: str | None = None,
    **card: Any,
) -> str:
    """Create ``repo_id`` (if needed) and upload the saved student and its card in one commit; returns the commit
    URL. Needs network access and a token with write access (``hf auth login`` or ``token``)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, title=repo_id, **card)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision, repo_type="model"
        )
    return str(getattr(commit, "commit_url", commit))
