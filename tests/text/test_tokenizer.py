from leafpipe.text.tokenizer import load_tokenizer, save_tokenizer


def test_qwen2_checkpoint_keeps_its_own_tokenizer(tmp_path, tokenizer, tiny_qwen2, samples):
    # transformers 5 maps qwen2 to Qwen2Tokenizer, which adds <|endoftext|> and swaps the
    # pre-tokenizer; the saved tokenizer.json must win so teacher and student agree.
    tiny_qwen2(0).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert len(loaded) == len(tokenizer)
    text = samples[0][0] + "\n" + samples[0][1]
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.chat_template == tokenizer.chat_template


def test_digits_are_single_tokens(tmp_path, tokenizer):
    save_tokenizer(tokenizer, tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    pieces = loaded.tokenize("x 1234")
    assert [p for p in pieces if p.isdigit()] == ["1", "2", "3", "4"]
