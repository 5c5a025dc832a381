"""The report's closing notes: what the numbers are about (the replicates, the corpus, and on the
embedded world how it is built). The verdict itself comes from the paired statistics."""

from __future__ import annotations

from typing import Any


def _corpus_note(corpus: dict[str, Any]) -> str | None:
    """Where a given corpus comes from; None for the embedded world's."""
    if corpus["path"]:
        return f"Distillation corpus: `{corpus['path']}`."
    if corpus.get("benchmark") or corpus.get("hub"):
        return (
            f"Distillation corpus: rows {corpus['skip']}..{corpus['skip'] + corpus['limit'] - 1} "
            f"of `{corpus.get('benchmark') or corpus.get('hub')}` (rule corpus; "
            "`corpus/info.json` says where from)."
        )
    return None


def _world_note(config: dict[str, Any]) -> str:
    """How the embedded world tests reliance on distractors, and the settings that shape it."""
    w = config["world"]
    return (
        "Setting: the embedded confounder world. The student was pre-trained on problems where a "
        f"planted distractor gives the answer away with probability {w['student_shortcut_p']}; "
        "the teacher, the distillation corpus and the test split carry distractors that do not "
        "predict the answer, and the distractor-free test holds the same problems with the "
        "distractors removed. A student that copies distractor numbers fails the first test but "
        f"not the second. Distillation: {config['distill']['epochs']} epoch(s), "
        f"λ = {config['distill']['lam']}, {config['distill']['kd']['kind']} at "
        f"τ = {config['distill']['kd']['temperature']}; detection: "
        f"{config['detection']['percentile']}th percentile, cap {config['detection']['cap']}."
    )


def setting_notes(config: dict[str, Any]) -> str:
    """What the numbers are about; the verdict itself comes from the paired statistics."""
    seeds = ", ".join(map(str, config["seeds"]))
    replicates = (
        f"Replicates: seed(s) {seeds}, each a whole run of its own with that seed (world, "
        "training, sampling); its files are under `seed-<seed>/`. "
    )
    corpus = _corpus_note(config["corpus"])
    return replicates + (_world_note(config) if corpus is None else corpus)
