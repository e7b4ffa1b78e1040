# Regenerate with Debian's PyTorch, from the repository root:
#     /usr/bin/python3 tests/pytorch/make_gpt_fixture.py
# Writes tests/fixtures/gpt_lora_tiny.safetensors (format "fedlora-gpt-fixture", version 1):
# a tiny GPT with LoRA on all four linears, its weights, one batch, the logits, the loss, the
# gradient of every parameter (base and LoRA), and 5 AdamW steps on the LoRA weights alone.
"""The PyTorch truth for FedLora's GPT (DESIGN.md section 5), at a tiny size, in float32.

Tensors (all F32 unless noted; weights (out, in) row-major, metadata "layout": "out_in"):
  transformer.wte.weight (V,C), transformer.wpe.weight (maxT,C),
  transformer.h.{i}.ln_1.weight/.bias (C), .attn.c_attn.weight (3C,C)/.bias (3C),
  .attn.c_proj.weight (C,C)/.bias (C), .ln_2.weight/.bias (C), .mlp.c_fc.weight (4C,C)/.bias (4C),
  .mlp.c_proj.weight (C,4C)/.bias (C), transformer.ln_f.weight/.bias (C)      base, before training
  transformer.h.{i}.{attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj}.lora_A.weight (r,in),
  ....lora_B.weight (out,r)                                                    LoRA, before training
  batch.tokens (B,T) I32, batch.targets (B,T) I32 (-1 = not counted)
  out.logits (B,T,V), out.loss () = mean cross-entropy over targets != -1
  grad.<every base and LoRA name>: d(out.loss)/d(parameter), everything trainable (the LM head
      is tied, so grad.transformer.wte.weight sums the embedding and head paths)
  train.losses (5,): the loss at the start of each of 5 AdamW steps on the LoRA weights only
      (base frozen, same batch each step); train.losses[0] == out.loss
  train.<LoRA names>: the LoRA weights after the 5 steps
The weights are random (not a trained model) and large enough that every parameter, biases and
LayerNorm included, moves the output: B is small random, not zero, so d/dA is not zero either.
"""

import math
import os
import sys
from collections import OrderedDict

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedlora_gpt  # noqa: E402
import fedlora_safetensors  # noqa: E402

SEED = 20240601
CONFIG = fedlora_gpt.GPTConfig(vocab_size=257, context_length=16, n_layer=2, n_embd=24, n_head=4)
LORA = fedlora_gpt.LoraConfig(rank=4, alpha=8.0)
BATCH, TIME = 2, 16
STEPS = 5
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "gpt_lora_tiny.safetensors")


@torch.no_grad()
def init_fixture(model):
    """Random weights of a size that exercises every path (see the module docstring)."""
    for name, p in model.named_parameters():
        if name.endswith("lora_A.weight"):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))  # peft's LoRA A initialisation
        elif name.endswith("lora_B.weight"):
            nn.init.normal_(p, std=0.05)
        elif ".wte." in name or ".wpe." in name:
            nn.init.normal_(p, std=0.3)
        elif ".ln_" in name:
            nn.init.normal_(p, mean=1.0 if name.endswith("weight") else 0.0, std=0.1)
        else:
            # nn.Linear's default: uniform in +-1/sqrt(fan_in), for the weight and the bias.
            weight = model.get_parameter(name.rsplit(".", 1)[0] + ".weight")
            bound = 1.0 / math.sqrt(weight.shape[1])
            nn.init.uniform_(p, -bound, bound)


def make_batch():
    sequence = torch.randint(0, CONFIG.vocab_size, (BATCH, TIME + 1))
    sequence[0, 3] = 256  # the end-of-text token: the last row of the embedding table
    sequence[1, 3] = 256  # ...as a target (of position 2)
    tokens = sequence[:, :TIME].clone()
    targets = sequence[:, 1:].clone()
    targets[0, :5] = -1  # a prompt, as instruction tuning masks it
    targets[1, 7] = -1
    targets[1, TIME - 1] = -1
    return tokens, targets


@torch.no_grad()
def check_merge_matches(model, tokens, logits):
    """Self-check of the LoRA formula: folding s B A into W (and dropping the adapters) must give
    the same logits."""
    merged = fedlora_gpt.GPT(CONFIG, None)
    state = {n: p for n, p in model.base_parameters()}
    for name, a in model.lora_parameters():
        if name.endswith("lora_A.weight"):
            module = name.removesuffix(".lora_A.weight")
            b = model.get_parameter(module + ".lora_B.weight")
            state[module + ".weight"] = state[module + ".weight"] + LORA.scaling * (b @ a)
    merged.load_state_dict(state)
    difference = (merged(tokens)[0] - logits).abs().max().item()
    assert difference < 1e-4, f"merged model differs from the LoRA model by {difference}"


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)

    model = fedlora_gpt.GPT(CONFIG, LORA)
    init_fixture(model)
    tokens, targets = make_batch()
    base = OrderedDict((n, p.detach().clone()) for n, p in model.base_parameters())
    lora = OrderedDict((n, p.detach().clone()) for n, p in model.lora_parameters())

    # Full-parameter mode: every parameter requires grad.
    logits, loss = model(tokens, targets)
    loss.backward()
    grads = OrderedDict((f"grad.{n}", p.grad.detach().clone()) for n, p in model.named_parameters())
    check_merge_matches(model, tokens, logits.detach())

    # LoRA fine-tuning from the same state: base frozen, AdamW on A and B, the same batch each step.
    model.zero_grad(set_to_none=True)
    model.freeze_base()
    optimizer = torch.optim.AdamW([p for _, p in model.lora_parameters()], **ADAMW)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        _, step_loss = model(tokens, targets)
        losses.append(step_loss.item())
        step_loss.backward()
        optimizer.step()
    trained = OrderedDict((f"train.{n}", p.detach().clone()) for n, p in model.lora_parameters())

    tensors = OrderedDict()
    tensors.update(base)
    tensors.update(lora)
    tensors["batch.tokens"] = tokens.to(torch.int32)
    tensors["batch.targets"] = targets.to(torch.int32)
    tensors["out.logits"] = logits.detach()
    tensors["out.loss"] = loss.detach()
    tensors.update(grads)
    tensors["train.losses"] = torch.tensor(losses, dtype=torch.float32)
    tensors.update(trained)
    metadata = {
        "format": "fedlora-gpt-fixture",
        "version": "1",
        "layout": "out_in",
        "vocab_size": CONFIG.vocab_size,
        "context_length": CONFIG.context_length,
        "n_layer": CONFIG.n_layer,
        "n_embd": CONFIG.n_embd,
        "n_head": CONFIG.n_head,
        "layernorm_eps": repr(CONFIG.layernorm_eps),
        "gelu": "tanh",
        "tied_lm_head": "true",
        "lora_rank": LORA.rank,
        "lora_alpha": repr(LORA.alpha),
        "lora_scaling": repr(LORA.scaling),
        "lora_targets": ",".join(LORA.targets),
        "batch_size": BATCH,
        "seq_len": TIME,
        "loss": "mean cross-entropy over targets != -1",
        "train_steps": STEPS,
        "adamw_lr": repr(ADAMW["lr"]),
        "adamw_beta1": repr(ADAMW["betas"][0]),
        "adamw_beta2": repr(ADAMW["betas"][1]),
        "adamw_eps": repr(ADAMW["eps"]),
        "adamw_weight_decay": repr(ADAMW["weight_decay"]),
        "seed": SEED,
        "torch_version": torch.__version__,
    }
    assert all(t.dtype in (torch.float32, torch.int32) for t in tensors.values())
    fedlora_safetensors.save(OUTPUT, tensors, metadata)
    size = os.path.getsize(OUTPUT)
    print(f"wrote {os.path.relpath(OUTPUT)}: {len(tensors)} tensors, {size} bytes; loss {loss.item():.6f}, "
          f"losses after LoRA steps {', '.join(f'{x:.6f}' for x in losses)}")


if __name__ == "__main__":
    main()
