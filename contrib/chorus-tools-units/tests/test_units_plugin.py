"""The driver as Chorus loads it: entry point ``units`` in ``chorus.tools``, built into a skillset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import entry_points

import pytest

pytest.importorskip("chorus_tools_units", reason="chorus-tools-units is not installed")

from chorus_tools_units import UnitsTool

from chorus.config import SkillsetConfig
from chorus.errors import ConfigError, PluginError
from chorus.testing.gateway import build_skillsets, load_driver
from chorus.tools import ToolContext


def test_entry_point_is_registered() -> None:
    (entry,) = [ep for ep in entry_points(group="chorus.tools") if ep.name == "units"]
    assert entry.dist is not None and entry.dist.name == "chorus-tools-units"
    assert entry.load() is UnitsTool
    assert load_driver("tools", "units", env={}) is UnitsTool


def test_disabled_plugin_is_not_loaded() -> None:
    with pytest.raises(PluginError, match=r"no tools driver named 'units' is installed"):
        load_driver("tools", "units", env={"CHORUS_DISABLE_PLUGINS": "chorus-tools-units"})


def test_chorus_plugins_lists_it() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CHORUS_PLUGINS", "CHORUS_DISABLE_PLUGINS")}
    out = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "plugins", "--json"], env=env, capture_output=True, text=True, check=True,
        timeout=60,
    ).stdout
    rows = [p for p in json.loads(out)["plugins"] if p["group"] == "chorus.tools" and p["name"] == "units"]
    assert rows == [{"group": "chorus.tools", "name": "units", "distribution": "chorus-tools-units",
                     "version": "0.1.0", "hooks": []}]


async def test_skillset_builds_starts_and_runs_it() -> None:
    config = SkillsetConfig(
        id="kitchen",
        workspace="acme",
        tools=[
            {"name": "convert_units", "driver": "units", "customary": "imperial", "precision": 6},
            {"name": "convert_data", "driver": "units", "dimensions": ["data"], "data_prefixes": "binary"},
        ],
    )
    (skillset,) = build_skillsets([config], env={})
    await skillset.start()
    try:
        assert [spec.name for spec in skillset.specs()] == ["convert_units", "convert_data"]
        ctx = ToolContext(
            workspace="acme", bot="chef", request_id="req_1", deadline=time.monotonic() + 5, http=skillset.http
        )
        units, data = skillset.owner("convert_units"), skillset.owner("convert_data")
        assert units is not None and data is not None and units is not data
        pint = await units.call("convert_units", {"value": 1, "from_unit": "pint", "to_unit": "mL"}, ctx)
        assert pint["text"] == "1 imp pt ≈ 568.261 mL"
        gigabyte = await data.call("convert_data", {"value": 1, "from_unit": "GB", "to_unit": "MiB"}, ctx)
        assert gigabyte["text"] == "1 GB = 1024 MiB"
    finally:
        await skillset.aclose()


def test_bad_table_is_a_config_error_naming_the_location() -> None:
    config = SkillsetConfig(id="kitchen", workspace="acme", tools=[{"name": "u", "driver": "units", "precison": 3}])
    with pytest.raises(ConfigError, match=r"^skillsets\[0\]\.tools\[0\]: Object contains unknown field `precison`$"):
        build_skillsets([config], env={})
