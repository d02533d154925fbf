"""The model: reference size, special ids from the tokenizer, SDPA, no DeepSpeed, the MLM objective."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tinydnabert.errors import InputError
from tinydnabert.pretrain.model import (
    REFERENCE_PARAMETERS,
    MaskedLMObjective,
    ModelConfig,
    build_model,
    count_parameters,
    flops_per_token,
    hf_config,
)


def test_reference_model_has_exactly_19968512_parameters():
    model = build_model(ModelConfig())
    assert count_parameters(model) == REFERENCE_PARAMETERS == 19_968_512
    # the decoder is tied to the word embeddings (otherwise it would add 1024 x 512)
    assert model.lm_head.decoder.weight.data_ptr() == model.roberta.embeddings.word_embeddings.weight.data_ptr()
    assert model.config._attn_implementation == "sdpa"


def test_special_ids_come_from_the_tokenizer(hg38_shards):
    from tinydnabert.prep.tokenizer import load_tokenizer

    tok = load_tokenizer(hg38_shards)
    cfg = ModelConfig.tiny().with_tokenizer(tok)
    rc = hf_config(cfg)
    assert (rc.pad_token_id, rc.bos_token_id, rc.eos_token_id) == (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    assert (rc.pad_token_id, rc.bos_token_id, rc.eos_token_id) == (1, 0, 2)
    assert rc.vocab_size == len(tok) == 256
    model = build_model(cfg)
    # RoBERTa freezes the padding_idx row; it must be <pad>, not </s> (the reference repo's bug)
    assert model.roberta.embeddings.word_embeddings.padding_idx == tok.pad_token_id


def test_tokenizer_with_other_ids_is_followed():
    class Tok:  # a tokenizer whose specials sit elsewhere, like the reference repo's (<pad>=3, </s>=1)
        ids = {"<s>": 0, "</s>": 1, "<unk>": 2, "<pad>": 3}

        def convert_tokens_to_ids(self, t):
            return self.ids.get(t, 2)

        def __len__(self):
            return 100

    cfg = ModelConfig.tiny().with_tokenizer(Tok())
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.vocab_size) == (3, 0, 1, 100)
    assert build_model(cfg).roberta.embeddings.word_embeddings.padding_idx == 3


def test_model_module_runs_without_deepspeed():
    code = ("import sys, torch\n"
            "from tinydnabert.pretrain.model import ModelConfig, build_model, MaskedLMObjective\n"
            "m = MaskedLMObjective(build_model(ModelConfig.tiny(vocab_size=64)))\n"
            "x = torch.randint(5, 64, (2, 16)); loss, c, n = m(x, x)\n"
            "assert torch.isfinite(loss)\n"
            "assert 'deepspeed' not in sys.modules, 'model.py pulled in deepspeed'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("arch", ["roberta", "modernbert"])
@pytest.mark.parametrize("select_masked", [True, False])  # the CPU path and the accelerator path
def test_objective_equals_hf_masked_lm_loss(select_masked, arch):
    torch.manual_seed(0)
    net = build_model(ModelConfig.tiny(vocab_size=64, arch=arch)).eval()
    obj = MaskedLMObjective(net, select_masked=select_masked)
    x = torch.randint(5, 64, (3, 32))
    labels = torch.full_like(x, -100)
    pick = torch.rand(x.shape) < 0.15
    labels[pick] = x[pick]
    with torch.no_grad():
        loss, n_correct, n_masked = obj(x, labels)
        ref = net(input_ids=x, labels=labels)
    acc = ((ref.logits.argmax(-1) == labels) & (labels != -100)).sum()
    assert torch.allclose(loss, ref.loss, atol=1e-5)
    assert int(n_masked) == int(pick.sum()) > 0 and int(n_correct) == int(acc)


def test_modernbert_is_transformers_own_class_with_our_special_ids(hg38_shards):
    from transformers import ModernBertForMaskedLM

    from tinydnabert.prep.tokenizer import load_tokenizer

    tok = load_tokenizer(hg38_shards)
    cfg = ModelConfig.tiny(arch="modernbert").with_tokenizer(tok)
    model = build_model(cfg)
    assert type(model) is ModernBertForMaskedLM and model.config._attn_implementation == "sdpa"
    c = model.config
    assert (c.pad_token_id, c.bos_token_id, c.eos_token_id, c.cls_token_id, c.sep_token_id) == (1, 0, 2, 0, 2)
    assert model.model.embeddings.tok_embeddings.padding_idx == tok.pad_token_id
    # tied decoder, counted once; GeGLU at 2/3 of RoBERTa's width gives about RoBERTa's layer parameters
    # (ModernBERT has no position table: the whole model is 514 * hidden smaller)
    assert model.decoder.weight.data_ptr() == model.model.embeddings.tok_embeddings.weight.data_ptr()
    ref = build_model(ModelConfig.tiny(vocab_size=256)).roberta.encoder.layer
    mb = build_model(ModelConfig.tiny(vocab_size=256, arch="modernbert", intermediate_size=85)).model.layers
    assert abs(count_parameters(mb) - count_parameters(ref)) / count_parameters(ref) < 0.05
    # rotary positions start at 0: the whole table is usable, RoBERTa loses pad_id + 1
    assert cfg.max_tokens == 514 and ModelConfig.tiny().max_tokens == 512


def test_flops_per_token_count_the_geglu_input_twice():
    mb, rb = ModelConfig(arch="modernbert", intermediate_size=1365), ModelConfig(intermediate_size=2048)
    h, n = 512, 6
    assert flops_per_token(mb, 512) - flops_per_token(rb, 512) == 6 * n * h * (3 * 1365 - 2 * 2048)


def test_unknown_arch_is_refused():
    with pytest.raises(InputError, match="arch 'gpt' is not one of roberta, modernbert"):
        ModelConfig(arch="gpt")


def test_flops_per_token_reference():
    # 6 * (6 * (4*512^2 + 2*512*2048) + 512^2 + 512*1024) + 12 * 6 * 512 * 512
    assert flops_per_token(ModelConfig(), 512) == 6 * (6 * (4 * 512**2 + 2 * 512 * 2048) + 512**2 + 512 * 1024) \
        + 12 * 6 * 512 * 512


@pytest.mark.parametrize("kwargs, words", [
    (dict(hidden_size=100, num_attention_heads=8), "divisible"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(vocab_size=2), "outside the vocabulary"),
])
def test_bad_model_config_says_what_is_wrong(kwargs, words):
    with pytest.raises(InputError, match=words):
        ModelConfig(**kwargs)


def test_tokenizer_without_pad_is_named():
    class Tok:  # no <pad>: convert_tokens_to_ids falls back to <unk>
        name_or_path = "/somewhere/tokenizer"

        def convert_tokens_to_ids(self, t):
            return {"<s>": 0, "</s>": 2, "<unk>": 3}.get(t, 3)

        def __len__(self):
            return 100

    with pytest.raises(InputError, match=r"^/somewhere/tokenizer: tokenizer has no pad token"):
        ModelConfig.tiny().with_tokenizer(Tok())


def _loss_and_grads(obj, x, labels):
    obj.zero_grad()
    loss, n_correct, n_masked = obj(x, labels)
    loss.backward()
    return loss.detach(), int(n_correct), int(n_masked), [p.grad.clone() for p in obj.parameters()]


def test_fixed_size_selection_gives_the_full_head_loss_on_a_real_batch(hg38_shards, one_thread):
    """The sync-free path (the head on N = 128 positions per row, chosen by top-k) against the head on all
    512 positions, on one real micro-batch whose rows the data pipeline capped at 128 masked tokens."""
    from tinydnabert.pretrain.data import DataConfig, build_train_loader

    batch = next(iter(build_train_loader(hg38_shards, DataConfig(num_workers=0, masked_per_row=128), 4)))
    x, labels = batch["input_ids"], batch["labels"]  # [4, 512]
    assert 50 < (labels != -100).sum(1).min() and (labels != -100).sum(1).max() <= 128
    torch.manual_seed(0)
    net = build_model(ModelConfig.tiny(vocab_size=256)).eval()  # eval: no dropout, so both runs see one net
    full = _loss_and_grads(MaskedLMObjective(net, select_masked=False), x, labels)
    fixed = _loss_and_grads(MaskedLMObjective(net, masked_per_row=128), x, labels)
    picked = _loss_and_grads(MaskedLMObjective(net, select_masked=True), x, labels)
    for other in (fixed, picked):
        assert torch.allclose(other[0], full[0], rtol=1e-6, atol=1e-6)
        assert other[1:3] == full[1:3]
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(other[3], full[3]))
    # too small an N drops masked tokens: the comparison above can fail
    short = _loss_and_grads(MaskedLMObjective(net, masked_per_row=32), x, labels)
    assert short[2] == 4 * 32 < full[2]


def test_fixed_size_selection_takes_masked_positions_first_leftmost_first():
    from tinydnabert.pretrain.model import select_fixed

    hidden = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1)  # value = row * 6 + position
    labels = torch.tensor([[-100, 7, -100, 8, -100, -100], [9, 9, 9, 9, 9, 9]])
    h, t = select_fixed(hidden, labels, 3)
    got = sorted(zip(h.reshape(2, 3)[0].tolist(), t.reshape(2, 3)[0].tolist()))
    assert got == [(0.0, -100), (1.0, 7), (3.0, 8)]  # both masked, then the leftmost unmasked
    assert sorted(h.reshape(2, 3)[1].tolist()) == [6.0, 7.0, 8.0]  # all masked: the first three
