"""Students on the Hugging Face Hub: ``save_pretrained`` writes the student folder (the format training writes, so
every tool reads it) plus its model card; ``push_to_hub`` uploads that folder with ``huggingface_hub.HfApi``.

Only students are saved: exported files are published as they are, and teachers belong to their own authors.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

from distill.deploy.card import CardFacts, card_metadata, card_text, facts_from_run
from distill.students import save_student

#: Any object with a DepthModel's ``source``, ``name``, ``location``, ``runner``, ``width`` and ``height`` (typed
#: loosely: the model module calls this one, and the import rules forbid the circle back).
DepthModel = Any

CARD_NAME = "README.md"


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
