"""The start/replace and rewind rules of the engine (``orchestrations._starts``), without Ray."""

from __future__ import annotations

import pickle

import pytest

from orchestrations import DurableValueError, InstanceNotFoundError
from orchestrations._starts import FINISHED, ChildRewind, StartRule, child_rewind, rewind_refusal, start_rule
from runtime._status import TERMINAL, OrchestrationRuntimeStatus


def _rule(status, *, client=True, registered=True, continue_as_new=False, current="e0", execution="e1"):
    return start_rule(
        registered=registered, from_client=client, continue_as_new=continue_as_new, status=status,
        current_execution_id=None if status is None else current, execution_id=execution,
    )


def test_finished_is_the_runtimes_terminal_set():
    assert {s.value for s in TERMINAL} == FINISHED


def test_a_start_of_a_new_id_creates_it():
    assert _rule(None) is StartRule.CREATE
    assert _rule(None, client=False) is StartRule.CREATE


@pytest.mark.parametrize("status", sorted(FINISHED))
def test_a_start_of_a_finished_id_replaces_it(status):
    assert _rule(status) is StartRule.REPLACE
    assert _rule(status, client=False) is StartRule.REPLACE  # a parent's start replaces too


@pytest.mark.parametrize("status", ["Pending", "Running", "Suspended"])
def test_a_start_of_an_active_id_is_refused(status):
    assert _rule(status) is StartRule.ALREADY_EXISTS
    assert _rule(status, client=False) is StartRule.ALREADY_EXISTS


def test_only_a_clients_start_of_an_unknown_name_is_refused_for_it():
    assert _rule(None, registered=False) is StartRule.UNKNOWN_ORCHESTRATOR
    assert _rule("Running", registered=False) is StartRule.UNKNOWN_ORCHESTRATOR  # before anything else
    assert _rule(None, client=False, registered=False) is StartRule.CREATE


def test_a_retried_client_start_changes_nothing_whatever_the_status():
    for status in ["Running", "Completed", "Pending"]:
        assert _rule(status, current="e1", execution="e1") is StartRule.ALREADY_APPLIED
    # the runtime's own start of the same execution is not a retry
    assert _rule("Completed", client=False, current="e1", execution="e1") is StartRule.REPLACE


def test_continue_as_new_continues_only_an_instance_that_continued_as_new():
    assert _rule("ContinuedAsNew", client=False, continue_as_new=True) is StartRule.CONTINUE
    for status in ["Terminated", "Running", "Completed"]:  # terminated or replaced on the way
        assert _rule(status, client=False, continue_as_new=True) is StartRule.STALE_RESTART
    assert _rule(None, client=False, continue_as_new=True) is StartRule.CREATE  # purged meanwhile


def test_only_create_replace_and_continue_make_an_execution():
    assert {r for r in StartRule if r.creates} == {StartRule.CREATE, StartRule.REPLACE, StartRule.CONTINUE}


def test_runtime_statuses_are_accepted_as_they_are():
    assert _rule(OrchestrationRuntimeStatus.Failed) is StartRule.REPLACE
    assert child_rewind(OrchestrationRuntimeStatus.Failed) is ChildRewind.REWIND


def test_a_child_asked_again_by_its_rewinding_parent():
    assert child_rewind(None) is ChildRewind.START_AGAIN
    assert child_rewind("Failed") is ChildRewind.REWIND
    assert child_rewind("Completed") is ChildRewind.ANSWER_OUTPUT
    assert child_rewind("Terminated") is ChildRewind.ANSWER_TERMINATED
    for status in ["Running", "Pending", "Suspended", "ContinuedAsNew"]:
        assert child_rewind(status) is ChildRewind.WAIT


def test_only_a_failed_instance_can_be_rewound_and_the_refusal_names_it():
    assert rewind_refusal("a", "Failed") is None
    missing = rewind_refusal("a", None)
    assert isinstance(missing, InstanceNotFoundError) and "'a'" in str(missing)
    running = rewind_refusal("a", OrchestrationRuntimeStatus.Running)
    assert isinstance(running, DurableValueError)
    assert str(running) == "only a Failed instance can be rewound; 'a' is Running"
    assert type(pickle.loads(pickle.dumps(running))) is DurableValueError
