"""TextEncoder (T5 / mT5 / CLIP / BERT-like from local folders) and the prompt refiner, with tiny random models."""
import os
import shutil

import pytest
import torch

from opensora.text.refiner import INSTRUCTION, SYSTEM_PROMPT, PromptRefiner
from opensora.text.encoders import TextEncoder

TOKENIZER = os.path.join(os.path.dirname(__file__), "data", "tiny_text")
VOCAB = 256  # >= the test tokenizer's size



def _copy_tokenizer(folder):
    for name in os.listdir(TOKENIZER):
        if name.endswith(".json"):
            shutil.copy(os.path.join(TOKENIZER, name), folder)


def _save(model, folder):
    model.save_pretrained(folder)
    _copy_tokenizer(folder)
    return str(folder)


def _t5(folder, cls_name="T5"):
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, f"{cls_name}Config")(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                                        num_heads=2, relative_attention_num_buckets=8,
                                                        decoder_start_token_id=0)
    return _save(getattr(transformers, f"{cls_name}EncoderModel")(config), folder)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    return _t5(tmp_path_factory.mktemp("t5"))


def test_tokenizer_folder_loads_like_t5():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1) and len(tok) <= VOCAB
    ids = tok("a cat playing the piano")["input_ids"]
    assert ids[-1] == 1 and 2 not in ids  # ends with </s>, no <unk> for plain words


def test_t5_shapes_mask_and_max_length(t5_folder):
    enc = TextEncoder.from_pretrained(t5_folder, max_length=20)
    assert type(enc.model).__name__ == "T5EncoderModel" and enc.hidden_size == 16
    embeds, mask = enc(["a cat playing the piano", "a dog"])
    assert embeds.shape == (2, 20, 16) and mask.shape == (2, 20) and embeds.dtype == torch.float32
    n = mask.sum(1)
    assert 1 < n[1] < n[0] < 20 and bool((mask[:, :1] == 1).all())
    assert mask[0, : n[0]].all() and not mask[0, n[0]:].any()  # right padding
    long_prompt = " ".join(["cat"] * 50)
    assert enc([long_prompt])[1].sum() == 20  # truncated to max_length


def test_padding_does_not_change_real_token_embeddings(t5_folder):
    short = TextEncoder.from_pretrained(t5_folder, max_length=8)
    long = TextEncoder.from_pretrained(t5_folder, max_length=32)
    a, ma = short(["a dog"])
    b, mb = long(["a dog"])
    n = int(ma.sum())
    assert n == int(mb.sum()) and n < 8
    torch.testing.assert_close(a[:, :n], b[:, :n])
    # alone or next to a longer prompt in the batch: the same embeddings for its real tokens
    c, _ = long(["a cat playing the piano in a sunny living room", "a dog"])
    torch.testing.assert_close(c[1:, :n], b[:, :n])


def test_other_encoder_kinds(tmp_path):
    from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    clip = _save(CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                              num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=24,
                                              pad_token_id=0, bos_token_id=0, eos_token_id=1)), tmp_path / "clip")
    bert = _save(BertModel(BertConfig(vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=64)), tmp_path / "bert")
    mt5 = _t5(tmp_path / "mt5", "MT5")
    for folder, cls, width, length in ((clip, "CLIPTextModel", 16, 24), (bert, "BertModel", 8, 40),
                                       (mt5, "MT5EncoderModel", 16, 40)):
        enc = TextEncoder.from_pretrained(folder, max_length=40)
        assert type(enc.model).__name__ == cls and enc.hidden_size == width
        assert enc.max_length == length  # capped at max_position_embeddings where there is one
        embeds, mask = enc(["a cat", "a red car driving along a mountain road"])
        assert embeds.shape == (2, length, width) and mask.shape == (2, length) and mask.sum(1)[0] < mask.sum(1)[1]


def test_dtype_offload_and_diffusers_layout(t5_folder, tmp_path):
    enc = TextEncoder.from_pretrained(t5_folder, max_length=8, dtype=torch.bfloat16)
    assert enc.dtype == torch.bfloat16 and enc(["a cat"])[0].dtype == torch.bfloat16
    # diffusers layout: text_encoder/ + tokenizer/
    shutil.copytree(t5_folder, tmp_path / "text_encoder")
    os.makedirs(tmp_path / "tokenizer")
    for name in os.listdir(TOKENIZER):
        if name.endswith(".json"):
            shutil.move(str(tmp_path / "text_encoder" / name), tmp_path / "tokenizer" / name)
    ref, _ = TextEncoder.from_pretrained(t5_folder, max_length=8)(["a cat"])
    off = TextEncoder.from_pretrained(str(tmp_path), max_length=8, cpu_offload=True)
    moves = []
    original_to = off.model.to
    off.model.to = lambda *a, **k: (moves.append(str(a[0]) if a else k), original_to(*a, **k))[1]
    out, _ = off(["a cat"])
    torch.testing.assert_close(out, ref)
    assert moves == ["cpu", "cpu"]  # to the execution device (the CPU here) for the call, then back


def test_missing_files_are_named(tmp_path, t5_folder):
    with pytest.raises(FileNotFoundError, match="text encoder folder not found: .*nowhere"):
        TextEncoder.from_pretrained(str(tmp_path / "nowhere"))
    bare = tmp_path / "bare"
    shutil.copytree(t5_folder, bare)
    os.remove(bare / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=f"no text encoder weights in {bare}.*model.safetensors"):
        TextEncoder.from_pretrained(str(bare))
    shutil.copy(os.path.join(t5_folder, "model.safetensors"), bare)
    os.remove(bare / "tokenizer.json")
    os.remove(bare / "tokenizer_config.json")
    with pytest.raises(FileNotFoundError, match="no tokenizer files in .*tokenizer.json"):
        TextEncoder.from_pretrained(str(bare))


# ---------------------------------------------------------------------------------------------- refiner
def make_refiner_folder(folder) -> str:
    """A tiny random Llama causal LM with the test tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=None, eos_token_id=1, pad_token_id=0)
    return _save(LlamaForCausalLM(config), folder)


def test_refiner_is_greedy_bounded_and_uses_the_instruction(tmp_path):
    folder = make_refiner_folder(tmp_path / "lm")
    refiner = PromptRefiner.from_pretrained(folder, max_new_tokens=6)
    out = refiner.refine("a dog is running")
    assert isinstance(out, str) and out and out == refiner.refine("a dog is running")  # deterministic
    assert len(refiner.tokenizer(out, add_special_tokens=False)["input_ids"]) <= 6 + 2  # ~6 new tokens
    assert refiner.refine(["a", "b"]) == [refiner.refine("a"), refiner.refine("b")]
    text = refiner.chat_text("a dog")
    assert SYSTEM_PROMPT in text and INSTRUCTION.format("a dog") in text and text.endswith("Assistant:")
    refiner.tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                                       "{% if add_generation_prompt %}[assistant]{% endif %}")
    text = refiner.chat_text("a dog")
    assert text.startswith(f"[system] {SYSTEM_PROMPT}") and text.endswith("[assistant]")
    assert refiner.refine("a dog")
    # nothing generated -> the prompt is kept
    refiner.model.generate = lambda input_ids, **kw: input_ids
    assert refiner.refine("a dog") == "a dog"
    with pytest.raises(FileNotFoundError, match="prompt refiner folder not found"):
        PromptRefiner.from_pretrained(str(tmp_path / "nowhere"))
