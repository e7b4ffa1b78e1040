"""Hugging Face's GPT2LMHeadModel in plain PyTorch, with peft's LoRA, for FedLora's fixtures.

transformers and peft are not installable on these machines, so this file writes their math and
their names out: modules named as modeling_gpt2.py names them (transformer.wte, transformer.h.{i}.
attn.c_attn, ...), Conv1D layers whose weight is stored (in, out) and computed x @ W + b, the causal
mask buffer attn.bias, tanh GELU ("gelu_new"), LayerNorm with layer_norm_epsilon, attention scores
scaled by 1/sqrt(head size), and lm_head tied to wte. LoRA as peft's lora.Linear computes it on a
Conv1D base layer (fan_in_fan_out=True): out = base(x) + lora_B(lora_A(x)) * scaling, with lora_A an
nn.Linear(in, r) (weight (r, in)) and lora_B an nn.Linear(r, out) (weight (out, r)), scaling =
lora_alpha / r (or / sqrt(r) with use_rslora); fan_in_fan_out only transposes the merged delta.

Also here: config.json and the folder layout save_pretrained writes (model.safetensors, or shards and
model.safetensors.index.json), peft's adapter folder, and a byte-level BPE vocabulary in GPT-2's
format (vocab.json with bytes_to_unicode symbols, merges.txt).
"""

import json
import math
import os
import re
from collections import Counter, OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import fedlora_safetensors


def config_json(vocab_size, n_positions, n_embd, n_layer, n_head, eos_token_id):
    """The keys GPT2Config.to_dict() writes that matter, with GPT-2's values for the rest."""
    return OrderedDict(
        architectures=["GPT2LMHeadModel"],
        model_type="gpt2",
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_ctx=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        layer_norm_epsilon=1e-05,
        initializer_range=0.02,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=True,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        torch_dtype="float32",
        transformers_version="4.40.0",
    )


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: weight (in, out), out = x @ weight + bias."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.weight.size(1))


class LoraConv1D(nn.Module):
    """peft's lora.Linear around a Conv1D (fan_in_fan_out=True)."""

    def __init__(self, base, rank, alpha, use_rslora=False):
        super().__init__()
        self.base_layer = base
        in_features, out_features = base.weight.shape
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.scaling = alpha / (math.sqrt(rank) if use_rslora else rank)

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling

    def delta_weight(self):
        """peft's get_delta_weight with fan_in_fan_out: transpose(B @ A) * scaling, in Conv1D's (in, out)."""
        return (self.lora_B.weight @ self.lora_A.weight).t() * self.scaling


class GPT2Attention(nn.Module):
    def __init__(self, n_embd, n_head, n_positions):
        super().__init__()
        self.n_head = n_head
        self.register_buffer("bias", torch.tril(torch.ones(n_positions, n_positions, dtype=torch.bool)).view(1, 1, n_positions, n_positions))
        self.c_attn = Conv1D(3 * n_embd, n_embd)
        self.c_proj = Conv1D(n_embd, n_embd)

    def forward(self, x):
        b, t, c = x.shape
        hs = c // self.n_head
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, hs).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
        scores = torch.where(self.bias[:, :, :t, :t], scores, torch.finfo(scores.dtype).min)
        y = F.softmax(scores, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class GPT2MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = Conv1D(4 * n_embd, n_embd)
        self.c_proj = Conv1D(n_embd, 4 * n_embd)

    def forward(self, x):
        h = self.c_fc(x)
        # NewGELUActivation, HF's "gelu_new".
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        return self.c_proj(h)


class GPT2Block(nn.Module):
    def __init__(self, n_embd, n_head, n_positions, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=eps)
        self.attn = GPT2Attention(n_embd, n_head, n_positions)
        self.ln_2 = nn.LayerNorm(n_embd, eps=eps)
        self.mlp = GPT2MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2LMHeadModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        c = config["n_embd"]
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config["vocab_size"], c),
                wpe=nn.Embedding(config["n_positions"], c),
                h=nn.ModuleList(
                    [GPT2Block(c, config["n_head"], config["n_positions"], config["layer_norm_epsilon"]) for _ in range(config["n_layer"])]
                ),
                ln_f=nn.LayerNorm(c, eps=config["layer_norm_epsilon"]),
            )
        )

    def forward(self, tokens, targets=None):
        t = tokens.shape[1]
        x = self.transformer.wte(tokens) + self.transformer.wpe(torch.arange(t))
        for block in self.transformer.h:
            x = block(x)
        logits = self.transformer.ln_f(x) @ self.transformer.wte.weight.t()  # lm_head, tied
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def state_tensors(self):
        """The weights as save_pretrained stores them: parameters and the attn.bias buffers, no lm_head (tied)."""
        return OrderedDict((n, p.detach()) for n, p in self.state_dict().items() if ".lora_" not in n and "base_layer" not in n)


LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def add_lora(model, rank, alpha, targets=LORA_TARGETS, rank_pattern=None, alpha_pattern=None):
    """peft's inject_adapter: wraps each targeted Conv1D in a LoraConv1D. Returns {module name: LoraConv1D}."""
    wrapped = OrderedDict()
    for i, block in enumerate(model.transformer.h):
        for target in targets:
            parent_name, child = target.split(".")
            parent = getattr(block, parent_name)
            name = f"transformer.h.{i}.{target}"
            r = _pattern(rank_pattern, name, rank)
            a = _pattern(alpha_pattern, name, alpha)
            layer = LoraConv1D(getattr(parent, child), r, a)
            setattr(parent, child, layer)
            wrapped[name] = layer
    return wrapped


def _pattern(pattern, name, default):
    for key, value in (pattern or {}).items():
        if name == key or name.endswith("." + key):
            return value
    return default


def save_model_folder(path, model, dtype=torch.float32, shards=1, prefix=True):
    """save_pretrained's layout: config.json and model.safetensors, or `shards` files
    model-0000i-of-0000n.safetensors with model.safetensors.index.json. Without `prefix`, names drop
    "transformer." as GPT2Model checkpoints (the hub's gpt2) do."""
    os.makedirs(path, exist_ok=True)
    config = dict(model.config)
    config["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tensors = OrderedDict()
    for name, value in model.state_tensors().items():
        if name.endswith(".attn.bias") and prefix:
            continue  # recent transformers keep the causal mask out of the checkpoint (a non-persistent buffer)
        key = name if prefix else name.removeprefix("transformer.")
        tensors[key] = value.to(dtype)
    metadata = {"format": "pt"}
    if shards == 1:
        fedlora_safetensors.save(os.path.join(path, "model.safetensors"), tensors, metadata)
        return
    names = list(tensors)
    per = math.ceil(len(names) / shards)
    weight_map = OrderedDict()
    total = 0
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = OrderedDict((n, tensors[n]) for n in names[s * per : (s + 1) * per])
        fedlora_safetensors.save(os.path.join(path, file), part, metadata)
        for n, v in part.items():
            weight_map[n] = file
            total += v.numel() * v.element_size()
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def save_peft_folder(path, wrapped, rank, alpha, base_model, rank_pattern=None, alpha_pattern=None):
    """What PeftModel.save_pretrained writes for a LoRA on GPT-2."""
    os.makedirs(path, exist_ok=True)
    config = OrderedDict(
        peft_type="LORA",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
        r=rank,
        lora_alpha=alpha,
        target_modules=sorted({name.split(".", 3)[3] for name in wrapped}),
        fan_in_fan_out=True,
        bias="none",
        lora_dropout=0.0,
        use_rslora=False,
        rank_pattern=rank_pattern or {},
        alpha_pattern=alpha_pattern or {},
        init_lora_weights=True,
        inference_mode=True,
        modules_to_save=None,
        use_dora=False,
    )
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tensors = OrderedDict()
    for name, layer in wrapped.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A.weight.detach()
        tensors[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B.weight.detach()
    fedlora_safetensors.save(os.path.join(path, "adapter_model.safetensors"), tensors, {"format": "pt"})


def bytes_to_unicode():
    """GPT-2's map from bytes to printable characters (encoder.py), the alphabet of vocab.json."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return OrderedDict(zip(bs, [chr(c) for c in cs]))


def train_bpe(text, merges):
    """A byte-level BPE vocabulary in GPT-2's format: the 256 byte symbols (ids 0..255, in
    bytes_to_unicode's order, as gpt2's vocab.json has them), `merges` learned greedily on `text`'s
    words, then <|endoftext|>. Returns (vocab dict, merges list)."""
    alphabet = bytes_to_unicode()
    vocab = OrderedDict((symbol, i) for i, symbol in enumerate(alphabet.values()))
    words = Counter(tuple(alphabet[b] for b in w.encode("utf-8")) for w in re.findall(r" ?\w+| ?[^\s\w]+|\s+", text))
    learned = []
    for _ in range(merges):
        pairs = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        learned.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, learned


def save_tokenizer(path, vocab, merges):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
