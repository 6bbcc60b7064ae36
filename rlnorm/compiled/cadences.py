"""The compiled backend's env-step cadences, for the ones a config leaves at their defaults.

The defaults of `log_every`, `diagnostics_every`, `histograms_every` and `checkpoint_every`
are sized for the Python-stepped loop, which runs a few thousand env steps per second. The
compiled loop runs hundreds of times as many, so at those cadences it would stop every few
milliseconds to save a checkpoint or run a split diagnostics update (a call of the compiled
loop ends at each). A cadence still at its declared default gets the compiled backend's
below; any other value is kept as given. (A key set explicitly TO its default is taken as
left at it: the run's config.toml records the values used, and the start-up line names them.)
"""

from __future__ import annotations

import dataclasses

from rlnorm import config as config_lib

COMPILED_CADENCES = {
    "log_every": 50_000,
    "diagnostics_every": 1_000_000,
    "histograms_every": 5_000_000,
    "checkpoint_every": 5_000_000,
}


def with_compiled_cadences(config: config_lib.Config) -> tuple[config_lib.Config, str | None]:
    """`config` with each cadence of COMPILED_CADENCES that is at its declared default
    replaced (backend = "compiled" only), and the line saying so (None: nothing changed)."""
    if config.backend != "compiled":
        return config, None
    defaults = {f.name: f.default for f in dataclasses.fields(config_lib.Config)}
    changes = {
        key: value
        for key, value in COMPILED_CADENCES.items()
        if getattr(config, key) == defaults[key] != value
    }
    if not changes:
        return config, None
    said = ", ".join(f"{key} = {value:_}" for key, value in changes.items())
    line = (
        f"backend = 'compiled': cadences left at their defaults use the compiled backend's: "
        f"{said} env steps (set a key to choose another value)."
    )
    return config.replace(**changes), line
