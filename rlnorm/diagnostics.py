"""Scale diagnostics (issue #4). Interface used by the training loop; filled in by that issue."""

from __future__ import annotations


class ScaleDiagnostics:
    def __init__(self, agent, writer, config):
        self.agent, self.writer, self.config = agent, writer, config

    def due(self, step: int) -> bool:
        return False

    def before_update(self, step, obs, actions, advantages, returns, valid) -> None:
        pass

    def after_update(self, step, metrics) -> None:
        pass
