"""Fixtures for the adversarial tests: the edge agent factory of tests/edge."""

from tests.edge.conftest import make_agent, model_dir  # noqa: F401
