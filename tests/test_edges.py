"""Bad input at the edges of the product (issue 11, "Unclear errors at the edge" and "Settings
validated"): each refused where it is made, with a ``ValueError``/``TypeError`` that names the
value, never a raw ``UnicodeEncodeError``, ``unhashable type`` or ``ZeroDivisionError`` later.

No Ray: every check here runs before anything is sent (``TaskHub`` validates its settings
and its ``hub.json`` before it starts or joins a Ray).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from entities import EntityId
from entities._registry import EntitySpec
from orchestrations import DurableValueError, Registry, validate_instance_id
from orchestrations._checks import check_operation, checked_entity_key
from orchestrations._ids import MAX_ENTITY_ID_CHARS
from orchestrations._options import FrozenDict
from runtime import TaskHub
from runtime._client_args import check_timeout
from runtime.cli import main

SURROGATE = "a\udc80b"


# -- ids and keys -----------------------------------------------------------------------------------


def test_a_surrogate_in_an_instance_id_is_refused_naming_it():
    with pytest.raises(DurableValueError, match="surrogate") as info:
        validate_instance_id(SURROGATE)
    assert repr(SURROGATE) in str(info.value)


@pytest.mark.parametrize("make", [
    lambda: EntityId("counter", SURROGATE),
    lambda: EntityId(SURROGATE, "k"),
    lambda: EntityId.parse(f"@counter@{SURROGATE}"),
    lambda: checked_entity_key(f"@counter@{SURROGATE}"),  # what call_entity/signal_entity take
])
def test_a_surrogate_in_an_entity_id_is_refused_naming_it(make):
    with pytest.raises(DurableValueError, match="surrogate"):
        make()


def test_a_surrogate_in_an_operation_name_is_refused_naming_it():
    with pytest.raises(DurableValueError, match="surrogate") as info:
        check_operation(SURROGATE)  # what call_entity and signal_entity check
    assert repr(SURROGATE) in str(info.value)


def test_an_overlong_entity_id_is_refused_where_it_is_made_with_one_limit():
    key = "k" * 600
    for make in (lambda: EntityId("counter", key), lambda: checked_entity_key(f"@counter@{key}"),
                 lambda: EntityId.parse(f"@counter@{key}")):
        with pytest.raises(ValueError, match=f"at most {MAX_ENTITY_ID_CHARS}"):
            make()
    longest = "k" * (MAX_ENTITY_ID_CHARS - len("counter"))
    assert checked_entity_key(f"@counter@{longest}") == str(EntityId("counter", longest))


@pytest.mark.parametrize("name", ["a@b", "@counter", "counter@"])
def test_an_entity_name_with_an_at_sign_is_refused_at_registration(name):
    with pytest.raises(ValueError, match="must not contain '@'") as info:
        Registry().add_entity(name, EntitySpec(name, lambda ctx: None, False))
    assert repr(name) in str(info.value)


# -- activity options --------------------------------------------------------------------------------


def work(x):
    return x


@pytest.mark.parametrize(("options", "named"), [
    ({"num_cpus": -1}, "num_cpus"),
    ({"num_cpus": "2"}, "num_cpus"),
    ({"num_cpus": math.nan}, "num_cpus"),
    ({"num_cpus": True}, "num_cpus"),
    ({"num_gpus": math.inf}, "num_gpus"),
    ({"memory": -5}, "memory"),
    ({"resources": {"x": -1}}, "resources['x']"),
    ({"resources": ["x"]}, "resources"),
    ({"max_retries": 1.5}, "max_retries"),
])
def test_bad_activity_options_are_refused_at_registration_naming_them(options, named):
    with pytest.raises((ValueError, TypeError)) as info:
        Registry().add_activity(work, "work", **options)
    assert named in str(info.value)


def test_dict_and_list_activity_options_are_kept_hashable_and_still_dicts():
    spec = Registry().add_activity(
        work, "work", resources={"x": 1}, runtime_env={"env_vars": {"A": "1"}, "pip": ["x"]}, num_cpus=0.5,
    )
    options = dict(spec.ray_options)
    hash(spec.ray_options)  # a shard host groups calls by them (was: unhashable type: 'dict')
    assert options["resources"] == {"x": 1} and isinstance(options["resources"], dict)
    assert isinstance(options["resources"], FrozenDict)
    assert options["runtime_env"] == {"env_vars": {"A": "1"}, "pip": ["x"]}
    assert options["num_cpus"] == 0.5


# -- TaskHub settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "value"), [
    ("lock_timeout", math.nan), ("lock_timeout", -1), ("lock_timeout", True), ("lock_timeout", math.inf),
    ("lock_timeout", "3"),
    ("num_shards", True), ("num_shards", 0), ("num_shards", 2.0),
    ("cache_size", True), ("cache_size", 0), ("cache_size", math.nan),
    ("slow_episode_warning", math.nan), ("slow_episode_warning", -1.0), ("slow_episode_warning", True),
])
def test_bad_numeric_taskhub_settings_are_refused_naming_the_setting(tmp_path, setting, value):
    with pytest.raises(ValueError, match=setting):
        TaskHub("edges", data_dir=tmp_path, **{setting: value})
    assert not (tmp_path / "edges").exists()  # refused before anything was started or written


@pytest.mark.parametrize("setting", ["always_replay", "detached", "warm_worker"])
def test_a_flag_that_is_not_a_bool_is_refused_naming_it(tmp_path, setting):
    with pytest.raises(TypeError, match=setting):
        TaskHub("edges", data_dir=tmp_path, **{setting: 1})


@pytest.mark.parametrize("timeout", [True, False, math.nan, -1, "5"])
def test_a_wait_timeout_that_is_not_a_number_of_seconds_is_refused(timeout):
    with pytest.raises(ValueError, match="timeout"):
        check_timeout(timeout)  # what wait_for_completion and wait_for_orchestration_start check first


# -- a garbage hub.json ------------------------------------------------------------------------------

GARBAGE = ["not json at all", "{}", '{"num_shards": 0}', '{"num_shards": "2"}', "[1, 2]", "\xff\xfe"]


@pytest.mark.parametrize("shards", [{"num_shards": 2}, {}], ids=["explicit", "default"])
@pytest.mark.parametrize("content", GARBAGE)
def test_taskhub_refuses_a_garbage_hub_file_naming_it(tmp_path, content, shards):
    directory = tmp_path / "garbled"
    directory.mkdir()
    (directory / "hub.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(DurableValueError, match="hub file") as info:
        TaskHub("garbled", data_dir=tmp_path, **shards)  # without num_shards: read for the count
    assert str(directory / "hub.json") in str(info.value)
    assert not ray.is_initialized()  # refused before a Ray was started for it


@pytest.mark.parametrize("content", GARBAGE)
def test_the_cli_refuses_a_garbage_hub_file_in_one_line_naming_it(tmp_path: Path, content):
    directory = tmp_path / "garbled"
    directory.mkdir()
    (directory / "hub.json").write_bytes(content.encode("latin-1"))
    result = CliRunner().invoke(
        main, ["--hub", "garbled", "--data-dir", str(tmp_path), "--address", "local", "list"]
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert str(directory / "hub.json") in result.stderr and "Traceback" not in result.output
