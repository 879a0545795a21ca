"""End-to-end demo: data, model, UDF agent, alert sink, replay, alerts and a report.

``python -m demo`` (``make demo``) runs the product's main job locally: it prepares the
splits, trains a default model when the registry has none, starts the UDF agent and the
alert sink as real processes, replays the test split through the agent like Kapacitor,
posts Kapacitor-shaped alerts to the sink and writes a report under ``runs/demo-*``.
"""

from .config import DemoConfig
from .errors import DemoError, DemoInterrupted, StageError
from .runner import DemoResult, run_demo

__all__ = ["DemoConfig", "DemoError", "DemoInterrupted", "DemoResult", "StageError", "run_demo"]
