"""How ``tests/data/hub_v2`` was made: run from the root of a checkout of the release at
c114a73 (format version 2) as ``python tests/data/make_hub_v2.py``; it writes the hub
``hub_v2`` under ``tests/data`` (2 shards) with a completed instance (a tuple in its output,
a custom status), a failed one, one waiting for an event with a timer armed a century away, and an
entity with state. Kept so the fixture can be made again; the tests only read its output."""

from __future__ import annotations

import shutil
from pathlib import Path

from entities import EntityId
from runtime import OrchestrationRuntimeStatus, TaskHub
from tests.helpers import wait_until
from tests.integration import _hub_v2_app as app

DATA = Path(__file__).parent


def main() -> None:
    shutil.rmtree(DATA / "hub_v2", ignore_errors=True)
    with TaskHub("hub_v2", data_dir=str(DATA), num_shards=2) as hub:
        hub.start_new(app.hello, instance_id="done-1", client_input={"user": "ada"})
        hub.start_new(app.failing, instance_id="failed-1")
        hub.start_new(app.approval, instance_id="waiting-1", client_input=("tuple", 1))
        hub.signal_entity(EntityId("v2_counter", "orders"), "add", 41)
        assert hub.wait_for_completion("done-1", timeout=60).runtime_status is OrchestrationRuntimeStatus.Completed
        assert hub.wait_for_completion("failed-1", timeout=60).runtime_status is OrchestrationRuntimeStatus.Failed
        wait_until(lambda: hub.get_status("waiting-1").custom_status == "waiting")
        wait_until(lambda: hub.read_entity_state(EntityId("v2_counter", "orders")).entity_state == 41)
    for leftover in (DATA / "hub_v2").glob("*.lock"):
        leftover.unlink()


if __name__ == "__main__":
    main()
