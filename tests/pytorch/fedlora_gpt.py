"""FedLora's GPT in PyTorch: the reference the C# model is tested and benchmarked against.

A GPT-2-style decoder as DESIGN.md section 5 describes: token + learned position embeddings,
L pre-LayerNorm blocks (causal multi-head attention with a fused qkv projection c_attn and an
output projection c_proj; MLP c_fc C->4C, tanh-GELU, c_proj 4C->C; every linear has a bias;
LayerNorm eps 1e-5 with weight and bias), a final LayerNorm ln_f and a language-model head tied
to the token embedding (no bias). LoRA on the chosen linears, as peft computes it:
y = x W^T + b + s (x A^T) B^T, A (r,in), B (out,r), s = alpha / r.

Parameter names are Hugging Face GPT-2's (transformer.h.{i}.attn.c_attn.weight, ...) with peft's
LoRA names (....c_attn.lora_A.weight), but every weight is stored as nn.Linear stores it,
(out, in) row-major, which is FedLora's layout (HF's Conv1D stores (in, out)).

Imported by make_gpt_fixture.py and by bench/peers/lora_step_torch.py.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 257
    context_length: int = 256
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    layernorm_eps: float = 1e-5


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float
    targets: tuple = LORA_TARGETS

    @property
    def scaling(self):
        return self.alpha / self.rank


class LoraLinear(nn.Module):
    """out = inp W^T + bias (+ s (inp A^T) B^T when LoRA is on). W is (O,C), A is (r,C), B is (O,r)."""

    def __init__(self, in_features, out_features, lora=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.scaling = 0.0
        if lora is not None:
            self.lora_A = nn.Linear(in_features, lora.rank, bias=False)
            self.lora_B = nn.Linear(lora.rank, out_features, bias=False)
            self.scaling = lora.scaling
        else:
            self.lora_A = None
            self.lora_B = None

    def forward(self, x):
        out = F.linear(x, self.weight, self.bias)
        if self.lora_A is not None:
            out = out + self.lora_B(self.lora_A(x)) * self.scaling
        return out


class CausalSelfAttention(nn.Module):
    def __init__(self, config, lora_for):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = LoraLinear(config.n_embd, 3 * config.n_embd, lora_for("attn.c_attn"))
        self.c_proj = LoraLinear(config.n_embd, config.n_embd, lora_for("attn.c_proj"))

    def forward(self, x):
        b, t, c = x.shape
        hs = c // self.n_head
        # qkv is (B,T,3C) = [q | k | v], each C wide, head h in columns h*hs..(h+1)*hs.
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.n_head, hs).transpose(1, 2)
        k = k.view(b, t, self.n_head, hs).transpose(1, 2)
        v = v.view(b, t, self.n_head, hs).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, config, lora_for):
        super().__init__()
        self.c_fc = LoraLinear(config.n_embd, 4 * config.n_embd, lora_for("mlp.c_fc"))
        self.c_proj = LoraLinear(4 * config.n_embd, config.n_embd, lora_for("mlp.c_proj"))

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config, lora_for):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layernorm_eps)
        self.attn = CausalSelfAttention(config, lora_for)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layernorm_eps)
        self.mlp = MLP(config, lora_for)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config, lora=None):
        super().__init__()
        self.config = config

        def lora_for(target):
            return lora if lora is not None and target in lora.targets else None

        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.context_length, config.n_embd),
                h=nn.ModuleList([Block(config, lora_for) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layernorm_eps),
            )
        )

    def forward(self, tokens, targets=None):
        """tokens is (B,T) int64; targets (B,T) with -1 for positions the loss ignores.
        Returns logits (B,T,V) and the mean cross-entropy over counted targets (or None)."""
        b, t = tokens.shape
        positions = torch.arange(t, device=tokens.device)
        x = self.transformer.wte(tokens) + self.transformer.wpe(positions)
        for block in self.transformer.h:
            x = block(x)
        logits = self.transformer.ln_f(x) @ self.transformer.wte.weight.t()
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def base_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if ".lora_" not in n]

    def lora_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if ".lora_" in n]

    def freeze_base(self):
        for _, p in self.base_parameters():
            p.requires_grad_(False)


@torch.no_grad()
def init_gpt2(model, std=0.02):
    """GPT-2's initialisation (normal std 0.02, zero biases, unit LayerNorm) and peft's LoRA
    initialisation (A kaiming-uniform with a = sqrt(5), B = 0, so the adapter starts as a no-op)."""
    for name, p in model.named_parameters():
        if name.endswith("lora_A.weight"):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
        elif name.endswith("lora_B.weight"):
            nn.init.zeros_(p)
        elif ".ln_" in name and name.endswith("weight"):
            nn.init.ones_(p)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.normal_(p, mean=0.0, std=std)
