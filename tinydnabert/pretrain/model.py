"""The model: a transformers masked-LM built from one validated config. No DeepSpeed, ranks, logging or paths.

Two architectures, both transformers' own classes (no model code here beyond configuration), so an export
loads with AutoModelForMaskedLM / AutoModelForSequenceClassification and nothing of ours:
  * arch="roberta" (the reference): learned absolute positions, post-norm, GELU MLP;
  * arch="modernbert": transformers' ModernBertForMaskedLM — rotary positions, pre-norm, GeGLU MLP (its
    `intermediate_size` is the GLU's width: 2/3 of RoBERTa's gives the same parameters), bias-free linears,
    every third layer global attention and the others a 128-token sliding window (ModernBERT's defaults).

Reference TinyDNABERT: hidden 512, 6 layers, 8 heads, intermediate 2048, max positions 514 (512 tokens +
RoBERTa's position offset pad_id + 1 = 2), vocab 1024, type_vocab_size 2 -> exactly 19,968,512 parameters
(the LM decoder shares the word-embedding matrix, so it is counted once):

    embeddings  1024*512 + 514*512 + 2*512 + LN 1024       =    789,504
    6 layers    6 * (4*(512*512+512) + 2*(512*2048) + 2048 + 512 + 2*1024) = 18,914,304
    LM head     512*512+512 + LN 1024 + bias 1024           =    264,704

Special-token ids come from the tokenizer (formats.SPECIAL_TOKENS: <s>=0 <pad>=1 </s>=2), never from
RobertaConfig's defaults: the reference repo's tokenizer had <pad>=3 and </s>=1 while its config kept
pad=1, so its </s> embedding was RoBERTa's padding_idx row — frozen at zero for the whole run.

    cfg = ModelConfig.tiny(vocab_size=256)
    model = build_model(cfg)                    # transformers.RobertaForMaskedLM, SDPA attention
    objective = MaskedLMObjective(model)        # what the training engine wraps
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tinydnabert.errors import InputError
from tinydnabert.formats import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID

REFERENCE_PARAMETERS = 19_968_512
ARCHS = ("roberta", "modernbert")


@dataclass
class ModelConfig:
    """Architecture and shape. Defaults are the reference TinyDNABERT; vocab size and special ids are taken
    from the tokenizer at training time (`with_tokenizer`), so they have no command-line flags."""

    arch: str = field(default="roberta", metadata={
        "help": "roberta (the reference TinyDNABERT) or modernbert (transformers' ModernBERT: rotary, pre-norm, "
                "GeGLU; see docs/recipes.md)", "choices": list(ARCHS)})
    hidden_size: int = field(default=512, metadata={"help": "model width"})
    num_hidden_layers: int = field(default=6, metadata={"help": "transformer layers"})
    num_attention_heads: int = field(default=8, metadata={"help": "attention heads (must divide hidden size)"})
    intermediate_size: int = field(default=2048, metadata={"help": "feed-forward width"})
    max_position_embeddings: int = field(
        default=514,
        metadata={"help": "position table size: longest sequence + 2 (RoBERTa offsets positions by pad_id + 1)"})
    type_vocab_size: int = field(default=2, metadata={"help": "token-type table size (the reference kept RoBERTa's 2)"})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "dropout on hidden states"})
    attention_probs_dropout_prob: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    vocab_size: int = field(default=1024, metadata={"help": "vocabulary size (from the tokenizer)", "cli": False})
    pad_token_id: int = field(default=PAD_ID, metadata={"help": "<pad> id (from the tokenizer)", "cli": False})
    bos_token_id: int = field(default=BOS_ID, metadata={"help": "<s> id (from the tokenizer)", "cli": False})
    eos_token_id: int = field(default=EOS_ID, metadata={"help": "</s> id (from the tokenizer)", "cli": False})

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise InputError(f"model config: arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "vocab_size"):
            if getattr(self, name) < 1:
                raise InputError(f"model config: {name}={getattr(self, name)} must be >= 1")
        if self.hidden_size % self.num_attention_heads:
            raise InputError(f"model config: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}; choose heads that divide it")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"model config: {name}={getattr(self, name)} must be in [0, 1)")
        ids = {"pad": self.pad_token_id, "bos": self.bos_token_id, "eos": self.eos_token_id}
        for name, i in ids.items():
            if not 0 <= i < self.vocab_size:
                raise InputError(f"model config: {name}_token_id {i} is outside the vocabulary "
                                 f"(size {self.vocab_size})")
        if len(set(ids.values())) != 3:
            raise InputError(f"model config: special-token ids must differ, got {ids}")

    @property
    def max_tokens(self) -> int:
        """Longest input the position table allows: RoBERTa positions start at pad_id + 1; ModernBERT's
        rotary positions start at 0."""
        if self.arch == "modernbert":
            return self.max_position_embeddings
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def tiny(cls, **overrides: Any) -> "ModelConfig":
        """A 2-layer, 64-wide model for tests and CPU smoke runs (~0.1 M parameters + embeddings)."""
        values: dict[str, Any] = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=128)
        values.update(overrides)
        return cls(**values)

    def with_tokenizer(self, tokenizer: Any) -> "ModelConfig":
        """This config with vocabulary size and special ids read from a (HF) tokenizer."""
        ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
               (("bos", "<s>"), ("pad", "<pad>"), ("eos", "</s>"))}
        unk = tokenizer.convert_tokens_to_ids("<unk>")
        for name, i in ids.items():
            if i is None or (i == unk and name != "unk"):
                where = getattr(tokenizer, "name_or_path", "") or "tokenizer"
                raise InputError(f"{where}: tokenizer has no {name} token; re-run `tinydnabert preprocess` to make one")
        return dataclasses.replace(self, vocab_size=len(tokenizer), pad_token_id=ids["pad"],
                                   bos_token_id=ids["bos"], eos_token_id=ids["eos"])


def hf_config(cfg: ModelConfig):
    """The transformers config for `cfg` (SDPA attention): RobertaConfig or ModernBertConfig."""
    if cfg.arch == "modernbert":
        from transformers import ModernBertConfig

        hc = ModernBertConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings,
            # The reference's two dropouts mapped onto ModernBERT's three, so an arm differs in architecture only.
            embedding_dropout=cfg.hidden_dropout_prob, mlp_dropout=cfg.hidden_dropout_prob,
            attention_dropout=cfg.attention_probs_dropout_prob,
            pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
            cls_token_id=cfg.bos_token_id, sep_token_id=cfg.eos_token_id, tie_word_embeddings=True,
        )
    else:
        from transformers import RobertaConfig

        hc = RobertaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
            hidden_dropout_prob=cfg.hidden_dropout_prob,
            attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
            pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
            tie_word_embeddings=True,
        )
    # SDPA picks flash / memory-efficient kernels on GPU and a fused kernel on CPU; it is also what the
    # export's config.json records, so a plain `from_pretrained` runs the same attention.
    hc._attn_implementation = "sdpa"
    return hc


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised transformers masked LM (RobertaForMaskedLM or ModernBertForMaskedLM; HF's init,
    seeded by the caller)."""
    from transformers import ModernBertForMaskedLM, RobertaForMaskedLM

    cls = ModernBertForMaskedLM if cfg.arch == "modernbert" else RobertaForMaskedLM
    return cls(hf_config(cfg))


def encoder_of(net: nn.Module) -> nn.Module:
    """The bare encoder of a transformers masked LM (RoBERTa's `.roberta`, ModernBERT's `.model`)."""
    return getattr(net, net.base_model_prefix)


def mlm_logits(net: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The masked-LM head of `net` on encoder outputs `hidden` [..., H] -> logits [..., V]: RoBERTa's
    `lm_head`, ModernBERT's `head` + `decoder`, BERT's `cls`."""
    if hasattr(net, "lm_head"):
        return net.lm_head(hidden)
    if hasattr(net, "decoder") and hasattr(net, "head"):
        return net.decoder(net.head(hidden))
    return net.cls(hidden)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied decoder/embedding weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward, 2 FLOPs per multiply-add), analytic:

    6 * (matmul weights per token) + 12 * layers * hidden * seq_len (attention scores and values;
    PaLM appendix B). Embedding lookups are not matmuls; the LM head (dense + decoder) is counted in
    full even though the objective runs it on the ~15 % masked positions only, so MFU is comparable with
    a plain HF forward. Reference model at 512 tokens: 6 * 20.0 M + 12*6*512*512 = 1.39e8 FLOPs/token.
    """
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    # ModernBERT's GeGLU has an input matrix twice as wide (value and gate); its sliding-window layers
    # attend over <= 128 keys, counted as full here (exact at the CPU recipes' 128-token rows).
    per_layer = 4 * h * h + (3 if cfg.arch == "modernbert" else 2) * h * i
    head = h * h + h * cfg.vocab_size
    return 6.0 * (n * per_layer + head) + 12.0 * n * h * seq_len


class MaskedLMObjective(nn.Module):
    """MLM loss over the masked positions (labels != -100), plus the counts for MLM accuracy.

    forward(input_ids [B, L], labels [B, L] (-100 = not masked), attention_mask [B, L] or None)
      -> (loss: mean cross-entropy over masked tokens, n_correct, n_masked) — the last two as 0-dim
         tensors so callers can sum them without a device sync.
    The wrapped `net` is a plain transformers masked LM (build_model); exporting it needs nothing from this class.

    Where the LM head runs (the head is ~4 % of the reference model's FLOPs, but its fp32 logits are
    B*L*V*4 bytes = 256 MiB per 128 x 512 micro-batch at V = 1024, written and read again by the loss):
      * masked_per_row = N > 0: on exactly N positions of every row, the row's masked ones first (a
        fixed-size top-k, no sync, the same shapes every step). Exact while no row has more than N masked
        tokens, which the data pipeline guarantees with the same N (DataConfig.masked_per_row);
      * else select_masked (None = on CPU only): on the masked rows found by nonzero() — free on a CPU,
        a host-device sync per micro-step on an accelerator;
      * else on every position.
    """

    def __init__(self, net: nn.Module, select_masked: bool | None = None, masked_per_row: int = 0):
        super().__init__()
        self.net = net
        self.select_masked = select_masked  # None: on CPU only (see forward)
        if masked_per_row < 0:
            raise InputError(f"masked_per_row {masked_per_row}: must be >= 0 (0 = off)")
        self.masked_per_row = masked_per_row

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = encoder_of(self.net)(input_ids=input_ids, attention_mask=attention_mask)[0]  # [B, L, H]
        if self.masked_per_row:
            hidden, target = select_fixed(hidden, labels, self.masked_per_row)            # [B*N, H], [B*N]
        else:
            hidden = hidden.reshape(-1, hidden.shape[-1])                               # [B*L, H]
            target = labels.reshape(-1)                                                  # [B*L]
            select = hidden.device.type == "cpu" if self.select_masked is None else self.select_masked
            if select:
                # Head on the masked rows only: nonzero() is free on CPU (no device to sync with) and
                # skips ~85 % of the head's work (24 % of a 2-layer 64-wide model's FLOPs, ~4 % of the
                # reference).
                idx = (target != IGNORE_INDEX).nonzero(as_tuple=True)[0]                         # [M]
                hidden, target = hidden.index_select(0, idx), target.index_select(0, idx)
        logits = mlm_logits(self.net, hidden)                                            # [rows, V]
        loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
        valid = target != IGNORE_INDEX
        n_correct = ((logits.argmax(-1) == target) & valid).sum()
        return loss, n_correct, valid.sum()


def select_fixed(hidden: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N positions of every row, masked ones first, by a fixed-size top-k (no host-device sync):
    (hidden [B*N, H], target [B*N]); a picked unmasked position keeps its -100 label, so the loss
    ignores it. Among equals the leftmost position wins, so the choice is deterministic."""
    b, length, h = hidden.shape
    n = min(n, length)
    pos = torch.arange(length, device=labels.device)
    # Unique keys: every masked position (key >= L) above every unmasked one, leftmost first within each.
    key = (labels != IGNORE_INDEX).to(torch.int32) * length + (length - 1 - pos).to(torch.int32)      # [B, L]
    idx = key.topk(n, dim=1, sorted=False).indices                                                 # [B, N]
    picked = hidden.gather(1, idx.unsqueeze(-1).expand(b, n, h))                                   # [B, N, H]
    return picked.reshape(b * n, h), labels.gather(1, idx).reshape(b * n)
