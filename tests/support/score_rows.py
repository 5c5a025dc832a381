"""Hand-made scorer output (the long schema of `leafpipe.detect.scoring`) for detection tests."""


def score_rows(sample_id, words, response, grad, gxi=None):
    """One sample's rows: instruction `words` then `response` tokens (steps split at newlines),
    with `grad[i]` as token i's grad_norm and, given `gxi`, its grad_x_input."""
    records, pos = [], 0
    for part, toks in (("instruction", words), ("response", response)):
        start, step = 0, 0
        for tok in toks:
            record = {
                "sample_id": sample_id,
                "part": part,
                "step": step if part == "response" else -1,
                "position": pos,
                "token_id": pos,
                "token": tok,
                "char_start": start,
                "char_end": start + len(tok),
                "grad_norm": float(grad[pos]),
            }
            if gxi is not None:
                record["grad_x_input"] = float(gxi[pos])
            records.append(record)
            start, pos = start + len(tok), pos + 1
            step += part == "response" and tok == "\n"
    return records
