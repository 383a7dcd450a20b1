"""Sequences: versioned definitions under client-chosen ids, and their lifecycle.

`draft` → `active` (activate: every template must exist) ⇄ `paused` (pause/resume) → `archived`.
Only active sequences enrol and run steps; pausing holds enrolments where they are. Archiving
and deleting exit the active enrolments. A changed definition (or request `triggers`) makes a new
immutable version; running enrolments keep the version they enrolled in.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import insert_if_absent
from app.errors import BadRequest
from app.errors import Conflict
from app.errors import NotFound
from app.errors import Unprocessable
from app.models import Enrolment
from app.models import Sequence
from app.models import SequenceVersion
from app.models import Template
from app.services.pages import Page
from app.services.pages import page_by_id
from app.timeutil import isoformat
from app.timeutil import utcnow
from sequences import Definition
from sequences import DefinitionError
from sequences import parse_definition

STATUSES = ("draft", "active", "paused", "archived")
_ONE_MS = timedelta(milliseconds=1)
# action → the statuses it may start from (the target status itself makes it a no-op).
_TRANSITIONS = {
    "activate": ("draft", "active"),
    "pause": ("active", "paused"),
    "resume": ("paused", "active"),
    "archive": ("draft", "active", "paused", "archived"),
}
_TARGET = {"activate": "active", "pause": "paused", "resume": "active", "archive": "archived"}


@lru_cache(maxsize=4096)
def load_canonical(canonical: str) -> Definition:
    """Parse a stored canonical definition (immutable, so parsed once per process)."""
    return parse_definition(canonical)


def parse_request(definition: str, triggers: Any) -> Definition:
    """Parse a request's definition; BadRequest with details naming the step and field."""
    try:
        return parse_definition(definition, triggers=triggers)
    except DefinitionError as error:
        details = error.details()
        raise BadRequest(f"Invalid definition: {error}", details=details) from None


def get_sequence(db: Session, *, tenant_id: str, sequence_id: str,
                 lock: bool = False) -> Sequence:
    """The tenant's sequence, or NotFound; `lock` holds its row."""
    query = select(Sequence).where(Sequence.tenant_id == tenant_id, Sequence.id == sequence_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    sequence = db.scalar(query)
    if sequence is None:
        raise NotFound(f"Sequence {sequence_id} not found.")
    return sequence


def current_version(db: Session, sequence: Sequence) -> SequenceVersion:
    """The version new enrolments run."""
    version = db.get(SequenceVersion, (sequence.tenant_id, sequence.id, sequence.version))
    assert version is not None  # written with the sequence, deleted only with it
    return version


def version_definition(db: Session, *, tenant_id: str, sequence_id: str,
                       version: int) -> Definition | None:
    """The parsed definition of one version (None if the sequence was deleted)."""
    canonical = db.scalar(select(SequenceVersion.canonical).where(
        SequenceVersion.tenant_id == tenant_id, SequenceVersion.sequence_id == sequence_id,
        SequenceVersion.version == version))
    return None if canonical is None else load_canonical(canonical)


def missing_templates(db: Session, *, tenant_id: str, definition: Definition) -> list[str]:
    """Templates the definition sends that the tenant does not have, in step order."""
    wanted = definition.template_ids()
    if not wanted:
        return []
    found = set(db.scalars(select(Template.id).where(Template.tenant_id == tenant_id,
                                                     Template.id.in_(wanted))))
    return [template for template in wanted if template not in found]


def _require_templates(db: Session, *, tenant_id: str, definition: Definition) -> None:
    missing = missing_templates(db, tenant_id=tenant_id, definition=definition)
    if missing:
        listed = ", ".join(missing)
        raise Unprocessable(f"Referenced templates do not exist: {listed}.",
                            details={"definition": [f"Template {t} does not exist."
                                                    for t in missing]})


def _touch(sequence: Sequence) -> None:
    # Strictly later than before: clients comparing timestamps, and the trigger cache's version
    # stamp, see every change even within one millisecond.
    sequence.updated_at = max(utcnow(), sequence.updated_at + _ONE_MS)


def _add_version(db: Session, sequence: Sequence, *, version: int, text: str, triggers: Any,
                 definition: Definition) -> None:
    db.add(SequenceVersion(tenant_id=sequence.tenant_id, sequence_id=sequence.id, version=version,
                           definition=text, triggers=triggers, canonical=definition.to_json(),
                           created_at=utcnow()))


def upsert_sequence(db: Session, *, tenant_id: str, sequence_id: str, name: str,
                    definition: str, triggers: Any = None) -> tuple[Sequence, bool]:
    """Create (draft) or update the sequence; return it and whether it is new.

    A new version is made only when the definition text or the request's triggers changed, so
    repeating a PUT changes nothing. A running sequence's new version must pass the activation
    check too (it is what new enrolments will run).
    """
    parsed = parse_request(definition, triggers)
    now = utcnow()
    row = {"tenant_id": tenant_id, "id": sequence_id, "name": name, "status": "draft",
           "version": 1, "created_at": now, "updated_at": now}
    # ON CONFLICT DO NOTHING: a concurrent creator makes this wait and skip, not fail.
    if insert_if_absent(db, Sequence.__table__, row, ["tenant_id", "id"]):
        sequence = get_sequence(db, tenant_id=tenant_id, sequence_id=sequence_id)
        _add_version(db, sequence, version=1, text=definition, triggers=triggers,
                     definition=parsed)
        db.flush()
        return sequence, True
    try:
        sequence = get_sequence(db, tenant_id=tenant_id, sequence_id=sequence_id, lock=True)
    except NotFound:
        raise Conflict(f"The sequence {sequence_id} changed concurrently; retry the request."
                       ) from None
    current = current_version(db, sequence)
    changed_definition = (current.definition != definition
                          or json.dumps(current.triggers) != json.dumps(triggers))
    if changed_definition:
        if sequence.status in ("active", "paused"):
            _require_templates(db, tenant_id=tenant_id, definition=parsed)
        sequence.version += 1
        _add_version(db, sequence, version=sequence.version, text=definition, triggers=triggers,
                     definition=parsed)
    if changed_definition or sequence.name != name:
        sequence.name = name
        _touch(sequence)
    db.flush()
    return sequence, False


def transition(db: Session, *, tenant_id: str, sequence_id: str, action: str) -> Sequence:
    """Apply activate/pause/resume/archive; Unprocessable for a transition the status forbids."""
    sequence = get_sequence(db, tenant_id=tenant_id, sequence_id=sequence_id, lock=True)
    target = _TARGET[action]
    if sequence.status not in _TRANSITIONS[action]:
        raise Unprocessable(f"Cannot {action} a sequence that is {sequence.status}.",
                            details={"status": [f"Sequence is {sequence.status}."]})
    if sequence.status == target:
        return sequence
    if action == "activate":
        definition = load_canonical(current_version(db, sequence).canonical)
        _require_templates(db, tenant_id=tenant_id, definition=definition)
    if action == "archive":
        exit_active_enrolments(db, tenant_id=tenant_id, sequence_id=sequence_id,
                               reason="sequenceArchived")
    if action == "resume":
        # Steps that fell due while paused have no task: clear the bookmark so the next sweep
        # picks them up at once.
        db.execute(update(Enrolment).where(
            Enrolment.tenant_id == tenant_id, Enrolment.sequence_id == sequence_id,
            Enrolment.status == "active").values(enqueued_at=None))
    sequence.status = target
    _touch(sequence)
    db.flush()
    return sequence


def exit_active_enrolments(db: Session, *, tenant_id: str, sequence_id: str,
                           reason: str) -> int:
    """End every active enrolment of the sequence (their pending steps become no-ops)."""
    now = utcnow()
    result = db.execute(update(Enrolment).where(
        Enrolment.tenant_id == tenant_id, Enrolment.sequence_id == sequence_id,
        Enrolment.status == "active").values(status="exited", exit_reason=reason,
                                             next_step_at=None, updated_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def delete_sequence(db: Session, *, tenant_id: str, sequence_id: str) -> None:
    """Delete the sequence and its versions; its active enrolments exit (history stays)."""
    sequence = get_sequence(db, tenant_id=tenant_id, sequence_id=sequence_id, lock=True)
    exit_active_enrolments(db, tenant_id=tenant_id, sequence_id=sequence_id,
                           reason="sequenceDeleted")
    db.delete(sequence)
    db.flush()


def list_sequences(db: Session, *, tenant_id: str, status: str | None, limit: int,
                   cursor: str | None = None) -> Page[Sequence]:
    """A page of the tenant's sequences in id order."""
    query = select(Sequence).where(Sequence.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Sequence.status == status)
    return page_by_id(db, query, Sequence.id, limit=limit, cursor=cursor, newest_first=False)


def sequence_view(db: Session, sequence: Sequence) -> dict[str, Any]:
    """The API's sequence object: the definition as given, the effective triggers."""
    version = current_version(db, sequence)
    definition = load_canonical(version.canonical)
    return {
        "id": sequence.id,
        "name": sequence.name,
        "status": sequence.status,
        "definition": version.definition,
        "triggers": [trigger.to_canonical() for trigger in definition.triggers],
        "version": sequence.version,
        "createdAt": isoformat(sequence.created_at),
        "updatedAt": isoformat(sequence.updated_at),
    }
