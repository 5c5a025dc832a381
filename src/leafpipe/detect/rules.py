"""Which detection behaviours `detection.rules` selects: the paper's code or leafpipe's own.

Torch- and transformers-free, since the Snakefile reads it on every job (the `score` and
`counterfactuals` rules track the resolved settings).
"""

from __future__ import annotations

from typing import Any

# What `rules` selects. paper: RUCBM/LeaF's code (src/Confounding_token_detection/
# remove_confounding_tokens_math.py: index percentile, runs of consecutive flagged tokens;
# run_gradients_*_response_level.py: an earlier segment scored by the continuation's loss).
RULES = {
    "paper": {
        "percentile_rule": "index",
        "join_whitespace": False,
        "widen_words": False,
        "response_scopes": "segments",
    },
    "leafpipe": {
        "percentile_rule": "interpolate",
        "join_whitespace": True,
        "widen_words": True,
        "response_scopes": "steps",
    },
}


def resolved_rules(settings: dict[str, Any]) -> dict[str, Any]:
    """The four behaviours `settings["rules"]` selects (default "paper"), each replaced by its
    own key in `settings` unless that is None or absent."""
    chosen = RULES[settings.get("rules") or "paper"]
    return {
        key: default if settings.get(key) is None else settings[key]
        for key, default in chosen.items()
    }
