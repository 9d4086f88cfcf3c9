"""The suite's fixtures: ``scripted_upstream`` and ``serve_chorus`` from chorus.testing."""

pytest_plugins = ["chorus.testing.fixtures"]
