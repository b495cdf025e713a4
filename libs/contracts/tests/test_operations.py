"""The request/reply table: one row per subject, each pair a contract type codegen knows."""

from __future__ import annotations

from runloom.contracts import commands, subjects, webhooks
from runloom.contracts.operations import OPERATIONS


def test_each_subject_is_declared_once_with_contract_types() -> None:
    known = commands.COMMAND_TYPES | webhooks.MANAGEMENT_TYPES
    declared = {v for k, v in vars(subjects).items() if k.isupper() and isinstance(v, str)}
    assert len({op.subject for op in OPERATIONS}) == len(OPERATIONS)
    assert len({op.name for op in OPERATIONS}) == len(OPERATIONS)
    for op in OPERATIONS:
        assert op.subject in declared, f"{op.subject} is not spelled in subjects.py"
        assert known[op.request.__name__] is op.request
        assert known[op.reply.__name__] is op.reply
        assert op.timeout_s > 0 and set(op.errors) <= {"unavailable", "refused"}
