"""The web UI: driven in a real headless browser (Debian's chromium through Selenium), and
read over HTTP from a hub's files when the hub is closed.

A user lists the instances, opens one, sees its history and what it waits for (a timer with
its fire time and the event its code awaits), raises that event through the confirmation page
and sees the instance complete; opens an entity and sees the instance that holds its lock. The
test also takes the screenshot the README shows (docs/ui.png, written there when
DURABLE_UPDATE_SCREENSHOT is set, so a test run leaves the checkout unchanged).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from entities import EntityId, entity
from orchestrations import activity, orchestrator
from runtime import OrchestrationRuntimeStatus as S
from runtime import TaskHub

from ..conftest import ALWAYS_REPLAY
from ..helpers import wait_until

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ALWAYS_REPLAY, reason="the UI only reads what hosts commit; the normal run covers it"),
    pytest.mark.timeout(600),
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ui.png"


@activity(name="ui_notify")
def notify(who: str) -> str:
    return f"asked {who}"


@entity(name="UiAccount")
class UiAccount:
    def __init__(self) -> None:
        self.balance = 0

    def add(self, amount: int) -> int:
        self.balance += amount
        return self.balance


@orchestrator(name="ui_approval")
def approval(ctx):
    asked = yield ctx.call_activity(notify, "boss")
    timeout = ctx.create_timer(ctx.current_utc_datetime + timedelta(days=3))
    answer = ctx.wait_for_external_event("Approval")
    winner = yield ctx.task_any([timeout, answer])
    return [asked, answer.result if winner is answer else "timed out"]


@orchestrator(name="ui_holder")
def holder(ctx):
    account = EntityId("UiAccount", "alice")
    with (yield ctx.lock_entities([account])):
        yield ctx.call_entity(account, "add", 10)
        yield ctx.wait_for_external_event("release")
    return "released"


@orchestrator(name="ui_quick")
def quick(ctx):
    return "quick"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM and DRIVER) and not os.environ.get("DURABLE_REQUIRE_BROWSER"):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER or "chromedriver"), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def ui(hub: TaskHub) -> Iterator[str]:
    server = hub.serve_ui()
    try:
        yield server.url
    finally:
        server.stop()


def test_a_user_finds_an_instance_sees_what_it_waits_for_and_lets_it_finish(
    hub: TaskHub, ui: str, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    iid = hub.start_new(approval)
    wait_until(lambda: any(e.event_type == "TimerCreated" for e in hub.get_history(iid)), timeout=30)
    browser.get(f"{ui}/instances?prefix={iid[:8]}")
    assert "no authentication" in browser.find_element(By.ID, "no-auth").text
    browser.find_element(By.LINK_TEXT, iid).click()
    assert browser.find_element(By.ID, "status").text == "Running"
    history = browser.find_element(By.ID, "history").text
    assert "TaskScheduled" in history and "ui_notify" in history and "TimerCreated" in history
    waiting = browser.find_element(By.ID, "waiting").text
    assert "timer" in waiting and "Approval" in waiting
    [timer] = [e for e in hub.get_history(iid) if e.event_type == "TimerCreated"]
    assert timer.fire_at.isoformat()[:19] in waiting  # when it fires, to the second
    browser.find_element(By.ID, "action-raise").click()
    name = browser.find_element(By.ID, "event-name")
    name.send_keys("Approval")
    data = browser.find_element(By.ID, "event-data")
    data.clear()
    data.send_keys('"approved"')
    browser.find_element(By.ID, "confirm").click()
    assert f"Raised Approval to {iid}" in browser.find_element(By.ID, "message").text
    wait_until(lambda: hub.get_status(iid).runtime_status is S.Completed, timeout=30)
    browser.refresh()
    assert browser.find_element(By.ID, "status").text == "Completed"
    assert "approved" in browser.find_element(By.ID, "output").text
    assert "Nothing." in browser.find_element(By.ID, "waiting").text


def test_a_user_opens_an_entity_and_sees_who_holds_its_lock(
    hub: TaskHub, ui: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    iid = hub.start_new(holder)
    wait_until(lambda: any(m.locked_by == iid for m in hub.list_entities("UiAccount")), timeout=30)
    browser.get(f"{ui}/entities")
    browser.find_element(By.LINK_TEXT, "@uiaccount@alice").click()
    assert browser.find_element(By.ID, "locked-by").text == iid
    assert browser.find_element(By.ID, "state").text == '{"UiAccount": {"balance": 10}}'
    browser.find_element(By.LINK_TEXT, iid).click()  # from the entity to its holder
    waiting = browser.find_element(By.ID, "waiting").text
    assert "holds lock @uiaccount@alice" in waiting and "event release" in waiting
    shot = tmp_path / "ui.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("DURABLE_UPDATE_SCREENSHOT"):  # the README's picture: refreshed on request only
        shutil.copyfile(shot, SCREENSHOT)
    hub.raise_event(iid, "release")
    assert hub.wait_for_completion(iid, timeout=30).output == "released"
    wait_until(lambda: all(m.locked_by is None for m in hub.list_entities("UiAccount")), timeout=30)
    browser.get(f"{ui}/entities/@uiaccount@alice")
    assert browser.find_element(By.ID, "locked-by").text == "nobody"


def test_a_closed_hub_is_read_from_its_files_without_actions(hub: TaskHub, tmp_path: Path) -> None:
    import httpx

    from runtime._readonly import HubFiles
    from runtime.ui import serve

    with TaskHub("ui-closed", data_dir=tmp_path) as closed:
        iid = closed.start_new(approval)
        wait_until(lambda: any(e.event_type == "TimerCreated" for e in closed.get_history(iid)), timeout=30)
    server = serve(HubFiles("ui-closed", tmp_path), "ui-closed", live=False)
    try:
        with httpx.Client(base_url=server.url) as web:
            page = web.get(f"/instances/{iid}")
            assert page.status_code == 200 and 'id="read-only"' in page.text and "TimerCreated" in page.text
            assert 'id="actions"' not in page.text and "Approval" in page.text  # this process has the code
            refused = web.post(f"/instances/{iid}/terminate", data={"confirm": "yes"})
            assert refused.status_code == 400 and "needs the hub &#39;ui-closed&#39; running" in refused.text
            assert web.get("/instances", params={"from": "yesterday"}).status_code == 400
            assert "&#39;yesterday&#39;" in web.get("/instances", params={"from": "yesterday"}).text
            assert web.get("/instances", params={"size": "0"}).status_code == 400
            assert web.get("/instances/no-such-instance").status_code == 404
            assert iid in web.get("/instances", params={"status": "Running", "from": "1h"}).text
            assert iid not in web.get("/instances", params={"status": "Completed"}).text
            assert iid in web.get("/instances", params={"name": "ui_approval"}).text
            assert iid not in web.get("/instances", params={"name": "ui_holder"}).text
    finally:
        server.stop()
    _the_cli_serves_the_closed_hub(tmp_path, iid)


def _the_cli_serves_the_closed_hub(data_dir: Path, iid: str) -> None:
    """``ray-durable ui`` prints its address, serves the files read-only, and stops on Ctrl-C,
    even when started with SIGINT ignored."""
    import signal
    import subprocess
    import sys

    import httpx

    # started with SIGINT ignored, as a shell's background job (and some CI runners) start it:
    # Ctrl-C must stop it all the same
    command = ["bash", "-c", 'trap "" INT; exec "$@"', "bash",
               sys.executable, "-m", "runtime.cli", "--hub", "ui-closed", "--data-dir", str(data_dir),
               "--address", "local", "ui", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert "read-only, from its files" in line, (line, process.stderr.read() if process.poll() is not None else "")
        url = line.split(" at ")[1].split()[0]
        assert iid in httpx.get(f"{url}/instances").text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # say where it is stuck: its threads' stacks, then end it
            process.send_signal(signal.SIGUSR1)
            time.sleep(2)
            process.kill()
            stuck = process.stderr.read() if process.stderr else ""
            raise AssertionError(f"ray-durable ui did not stop on Ctrl-C within 60 s:\n{stuck}") from None
    assert code == 0, process.stderr.read() if process.stderr else ""


def test_the_ui_listens_elsewhere_than_this_machine_only_when_told(hub: TaskHub) -> None:
    from orchestrations import DurableValueError

    with pytest.raises(DurableValueError, match=r"no authentication.*allow_remote"):
        hub.serve_ui(host="0.0.0.0")


def test_instances_are_listed_by_orchestrator_name_on_each_shard(hub: TaskHub) -> None:
    from orchestrations import DurableTypeError

    ids = [hub.start_new(approval) for _ in range(4)]
    other = hub.start_new(quick)
    named = hub.list_instances(name="ui_approval", page_size=2)
    found = [s.instance_id for s in named.instances]
    while named.continuation_token:
        named = hub.list_instances(name="ui_approval", page_size=2, continuation_token=named.continuation_token)
        found += [s.instance_id for s in named.instances]
    assert set(ids) <= set(found) and other not in found
    assert all(s.name == "ui_approval" for s in hub.list_instances(name="ui_approval", page_size=None).instances)
    with pytest.raises(DurableTypeError, match="name must be"):
        hub.list_instances(name=5)  # type: ignore[arg-type]
    for iid in ids:
        hub.terminate(iid, "done with it")
