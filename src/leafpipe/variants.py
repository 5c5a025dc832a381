"""The models a run compares, by name; torch-free, so the Snakefile loads it fast on every job."""

MODEL_LABELS = {
    "teacher": "Teacher",
    "student": "Student (pre-KD)",
    "sft": "SFT",
    "kd": "KD w/o mask",
    "leaf_instr": "LeaF (instr)",
    "leaf_instr_resp": "LeaF (instr+resp)",
}
# The counterfactual level each distillation variant trains on (None: original samples only).
VARIANT_LEVEL = {"sft": None, "kd": None, "leaf_instr": "instr", "leaf_instr_resp": "instr_resp"}
# What each variant learns from: the teacher's distributions ("kd") or the responses ("ce").
VARIANT_OBJECTIVE = {"sft": "ce", "kd": "kd", "leaf_instr": "kd", "leaf_instr_resp": "kd"}
# Reference rows of the report: the comparison asks whether LeaF beats kd; sft is not LeaF.
NOT_LEAF = ("sft", "kd")
