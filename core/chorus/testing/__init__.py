"""Helpers for testing Chorus plugins; import the submodules, e.g. :mod:`chorus.testing.replay`.

They ship in the core wheel, so they depend on the standard library (and what chorus-gateway
already installs) only, and never import pytest: use them from any test runner.
"""
