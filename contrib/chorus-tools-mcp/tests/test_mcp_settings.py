"""Settings are strict: one transport, known keys, sane values, secrets hidden."""

from __future__ import annotations

import pytest
from chorus_tools_mcp import McpTools
from mcp_testing import settings

from chorus.errors import ConfigError


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "exactly one of `command`"),
        ({"command": ["x"], "url": "https://mcp.example.com/mcp"}, "exactly one of `command`"),
        ({"command": []}, "`command` must name the program"),
        ({"command": ["x"], "bogus": 1}, "unknown field `bogus`"),
        ({"command": ["x"], "headers": {"A": "b"}}, "`headers` applies to `url` servers only"),
        ({"url": "https://mcp.example.com/mcp", "env": {"A": "b"}}, "`env` and `cwd` apply to `command`"),
        ({"url": "https://mcp.example.com/mcp", "cwd": "/tmp"}, "`env` and `cwd` apply to `command`"),
        ({"url": "file:///etc/passwd"}, "http:// or https://"),
        ({"url": "https://user:pw@mcp.example.com/mcp"}, "must not carry credentials"),
        ({"command": ["x"], "prefix": "a.b"}, "`prefix` may contain only"),
        ({"command": ["x"], "timeout": 0}, "`timeout`"),
        ({"command": ["x"], "startup_timeout": -1}, "`startup_timeout`"),
        ({"command": ["x"], "tools": "add"}, "`tools`"),
        ({"command": "python server.py"}, "`command`"),
    ],
)
def test_invalid_settings_are_config_errors_naming_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"skillsets\[0\]\.tools\[0\]") as info:
        settings(**raw)
    assert message in str(info.value)


def test_defaults_and_transport() -> None:
    stdio = settings(command=["server"], env={"TOKEN": "abc"}, cwd="/srv")
    http = settings(url="https://mcp.example.com/mcp")
    assert (stdio.transport, http.transport) == ("stdio", "http")
    assert (stdio.tools, stdio.prefix, stdio.timeout, stdio.startup_timeout) == (None, "", 60.0, 30.0)


def test_secret_values_are_hidden_from_reprs() -> None:
    http = settings(url="https://mcp.example.com/mcp", headers={"Authorization": "Bearer hunter2-hunter2"})
    stdio = settings(command=["server"], env={"API_KEY": "hunter2-hunter2"})
    assert "hunter2" not in repr(http) and "hunter2" not in repr(stdio)
    assert http.secrets() == ["Bearer hunter2-hunter2", "hunter2-hunter2"]
    assert stdio.secrets() == ["hunter2-hunter2"]


def test_only_credential_env_values_are_masked() -> None:
    stdio = settings(
        command=["server"],
        env={"GITHUB_TOKEN": "ghp_0123456789", "db_password": "pa55word-long", "LOG_LEVEL": "verbose-debug"},
    )
    assert stdio.secrets() == ["ghp_0123456789", "pa55word-long"]


def test_driver_declares_its_settings_type() -> None:
    assert McpTools.settings_type.__name__ == "McpSettings"
