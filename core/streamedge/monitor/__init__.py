"""Monitoring the local stack: the Prometheus/Grafana recipe and fleet metrics from edge heartbeats."""

from streamedge.monitor.recipe import Target, write_recipe

__all__ = ["Target", "write_recipe"]
