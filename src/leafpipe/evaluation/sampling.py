"""How completions are drawn, kept free of torch so that the config check (`leafpipe.config`,
imported by the Snakefile on every job) validates a benchmark's sampling with the very record
generation uses: one place for the rules, whichever reads them first."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSpec:
    """How completions are drawn: greedy when `temperature` is 0 (then `n` must be 1)."""

    n: int = 1  # completions per prompt (pass@k needs n >= k)
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # strings that end a completion (cut before them)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("n must be >= 1, temperature >= 0 and top_p in (0, 1]")
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 completions per prompt need sampling: set temperature > 0")
