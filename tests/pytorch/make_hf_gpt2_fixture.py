# Regenerate with Debian's PyTorch, from the repository root:
#     /usr/bin/python3 tests/pytorch/make_hf_gpt2_fixture.py
# Writes, under tests/fixtures/:
#   hf-gpt2-tiny/             a tiny random GPT2LMHeadModel as save_pretrained writes it (config.json,
#                             model.safetensors in F32 with "transformer." names) and GPT-2-format
#                             tokenizer files (vocab.json, merges.txt: a byte-level BPE of 60 merges)
#   hf-gpt2-tiny-bf16-sharded/ the same weights in BF16, in 3 shards with model.safetensors.index.json,
#                             under GPT2Model names (no "transformer." prefix) with the attn.bias mask
#                             buffers, as the hub's gpt2 checkpoint has them
#   hf-gpt2-tiny-peft/        a peft LoRA adapter folder for hf-gpt2-tiny with a rank_pattern and an
#                             alpha_pattern (mlp.c_fc at rank 2, attn.c_proj at alpha 3)
#   hf_gpt2_tiny.safetensors  the PyTorch truth (format "fedlora-hf-gpt2-fixture", version 1):
#     batch.tokens, batch.targets (B,T) I32 (-1 = not counted)
#     base.logits (B,T,V)        the model without adapters
#     bf16.logits (B,T,V)        the model with its weights rounded to BF16 (the sharded folder)
#     peft.logits (B,T,V)        the model with hf-gpt2-tiny-peft's adapter, as peft applies it
#     peft.merged_logits (B,T,V) the same adapter merged into the weights (peft's merge_and_unload)
#     lora.<module>.lora_A/B     a rank-4 (alpha 8) LoRA on all four linears, B random (not zero)
#     out.logits, out.loss       the model with that LoRA; loss = mean cross-entropy over targets != -1
#     grad.<module>.lora_A/B     d(out.loss)/d(LoRA weights), base frozen (as peft trains)
#     train.losses (5,)          the loss at the start of each of 5 AdamW steps on the LoRA weights
#     train.<module>.lora_A/B    the LoRA weights after them
# Or, for a demo folder of any size (random weights, same tokenizer):
#     /usr/bin/python3 tests/pytorch/make_hf_gpt2_fixture.py --folder DIR --n-layer 2 --n-embd 64 --n-head 4 --n-positions 256
"""The PyTorch truth for FedLora's Hugging Face GPT-2 loading, tokenizer files and peft interop."""

import argparse
import math
import os
import sys
from collections import OrderedDict

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedlora_safetensors  # noqa: E402
import hf_gpt2  # noqa: E402

SEED = 20250515
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
MERGES = 60
BATCH, TIME = 2, 16
RANK, ALPHA = 4, 8.0
STEPS = 5
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
PEFT_RANK_PATTERN = {"mlp.c_fc": 2}
PEFT_ALPHA_PATTERN = {"attn.c_proj": 3.0}

# The BPE's training text: the instruction template's words, so that merges fire on Dolly-like text.
CORPUS = (
    "### Instruction:\nWhat is the capital of France?\n\n### Response:\nThe capital of France is Paris.\n"
    "### Context:\nThe quick brown fox jumps over the lazy dog. It is the one that the other one is not.\n"
    "### Instruction:\nSummarize the text in one sentence.\n\n### Response:\nThis is the answer to the question.\n"
) * 3


def tokenizer():
    return hf_gpt2.train_bpe(CORPUS, MERGES)


@torch.no_grad()
def init_random(model, std=0.3):
    """Random weights large enough that every parameter moves the output."""
    for name, p in model.named_parameters():
        if ".ln_" in name:
            nn.init.normal_(p, mean=1.0 if name.endswith("weight") else 0.0, std=0.1)
        elif ".wte." in name or ".wpe." in name:
            nn.init.normal_(p, std=std)
        elif name.endswith("bias"):
            nn.init.normal_(p, std=0.05)
        else:
            nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[0]))


def make_batch(vocab_size, eos):
    sequence = torch.randint(0, vocab_size, (BATCH, TIME + 1))
    sequence[0, 3] = eos
    sequence[1, 3] = eos
    tokens = sequence[:, :TIME].clone()
    targets = sequence[:, 1:].clone()
    targets[0, :5] = -1
    targets[1, 7] = -1
    targets[1, TIME - 1] = -1
    return tokens, targets


def fresh(config, base_state):
    model = hf_gpt2.GPT2LMHeadModel(config)
    model.load_state_dict(base_state)
    return model


def write_fixtures():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    vocab, merges = tokenizer()
    eos = vocab["<|endoftext|>"]
    config = hf_gpt2.config_json(len(vocab), 32, 32, 2, 4, eos)
    model = hf_gpt2.GPT2LMHeadModel(config)
    init_random(model)
    base_state = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    tokens, targets = make_batch(len(vocab), eos)

    folder = os.path.join(FIXTURES, "hf-gpt2-tiny")
    hf_gpt2.save_model_folder(folder, model)
    hf_gpt2.save_tokenizer(folder, vocab, merges)
    sharded = os.path.join(FIXTURES, "hf-gpt2-tiny-bf16-sharded")
    hf_gpt2.save_model_folder(sharded, model, dtype=torch.bfloat16, shards=3, prefix=False)
    hf_gpt2.save_tokenizer(sharded, vocab, merges)

    out = OrderedDict()
    out["batch.tokens"] = tokens.to(torch.int32)
    out["batch.targets"] = targets.to(torch.int32)
    with torch.no_grad():
        out["base.logits"] = model(tokens)[0]
        rounded = fresh(config, OrderedDict((k, v.to(torch.bfloat16).to(torch.float32) if v.is_floating_point() else v) for k, v in base_state.items()))
        out["bf16.logits"] = rounded(tokens)[0]

    # A peft adapter folder with per-module ranks and alphas, and the logits peft gives with it.
    peft_model = fresh(config, base_state)
    wrapped = hf_gpt2.add_lora(peft_model, RANK, ALPHA, rank_pattern=PEFT_RANK_PATTERN, alpha_pattern=PEFT_ALPHA_PATTERN)
    with torch.no_grad():
        for layer in wrapped.values():
            nn.init.kaiming_uniform_(layer.lora_A.weight, a=math.sqrt(5))
            nn.init.normal_(layer.lora_B.weight, std=0.2)
        out["peft.logits"] = peft_model(tokens)[0]
        merged = fresh(config, base_state)
        for name, layer in wrapped.items():
            merged.get_submodule(name).weight += layer.delta_weight()
        out["peft.merged_logits"] = merged(tokens)[0]
    difference = (out["peft.logits"] - out["peft.merged_logits"]).abs().max().item()
    assert difference < 1e-4, f"peft's merged model differs from its LoRA model by {difference}"
    hf_gpt2.save_peft_folder(os.path.join(FIXTURES, "hf-gpt2-tiny-peft"), wrapped, RANK, ALPHA, "hf-gpt2-tiny",
                             PEFT_RANK_PATTERN, PEFT_ALPHA_PATTERN)

    # LoRA training as peft does it: base frozen, AdamW on A and B.
    lora_model = fresh(config, base_state)
    for p in lora_model.parameters():
        p.requires_grad_(False)
    wrapped = hf_gpt2.add_lora(lora_model, RANK, ALPHA)
    with torch.no_grad():
        for layer in wrapped.values():
            nn.init.kaiming_uniform_(layer.lora_A.weight, a=math.sqrt(5))
            nn.init.normal_(layer.lora_B.weight, std=0.05)
    for name, layer in wrapped.items():
        out[f"lora.{name}.lora_A"] = layer.lora_A.weight.detach().clone()
        out[f"lora.{name}.lora_B"] = layer.lora_B.weight.detach().clone()
    logits, loss = lora_model(tokens, targets)
    loss.backward()
    out["out.logits"] = logits.detach()
    out["out.loss"] = loss.detach()
    for name, layer in wrapped.items():
        out[f"grad.{name}.lora_A"] = layer.lora_A.weight.grad.detach().clone()
        out[f"grad.{name}.lora_B"] = layer.lora_B.weight.grad.detach().clone()
    parameters = [p for layer in wrapped.values() for p in (layer.lora_A.weight, layer.lora_B.weight)]
    optimizer = torch.optim.AdamW(parameters, **ADAMW)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        _, step_loss = lora_model(tokens, targets)
        losses.append(step_loss.item())
        step_loss.backward()
        optimizer.step()
    out["train.losses"] = torch.tensor(losses, dtype=torch.float32)
    for name, layer in wrapped.items():
        out[f"train.{name}.lora_A"] = layer.lora_A.weight.detach().clone()
        out[f"train.{name}.lora_B"] = layer.lora_B.weight.detach().clone()

    metadata = {
        "format": "fedlora-hf-gpt2-fixture",
        "version": "1",
        "lora_rank": RANK,
        "lora_alpha": repr(ALPHA),
        "adamw_lr": repr(ADAMW["lr"]),
        "adamw_beta1": repr(ADAMW["betas"][0]),
        "adamw_beta2": repr(ADAMW["betas"][1]),
        "adamw_eps": repr(ADAMW["eps"]),
        "adamw_weight_decay": repr(ADAMW["weight_decay"]),
        "seed": SEED,
        "torch_version": torch.__version__,
    }
    path = os.path.join(FIXTURES, "hf_gpt2_tiny.safetensors")
    fedlora_safetensors.save(path, out, metadata)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes), V={len(vocab)}, loss {loss.item():.6f}, "
          f"losses {', '.join(f'{x:.6f}' for x in losses)}")


def write_demo(arguments):
    torch.manual_seed(arguments.seed)
    vocab, merges = tokenizer()
    config = hf_gpt2.config_json(len(vocab), arguments.n_positions, arguments.n_embd, arguments.n_layer, arguments.n_head, vocab["<|endoftext|>"])
    model = hf_gpt2.GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name:
                nn.init.constant_(p, 1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=0.02)
    hf_gpt2.save_model_folder(arguments.folder, model)
    hf_gpt2.save_tokenizer(arguments.folder, vocab, merges)
    print(f"wrote {arguments.folder}: GPT2LMHeadModel L={arguments.n_layer} C={arguments.n_embd} V={len(vocab)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", help="write one random demo folder here instead of the fixtures")
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-positions", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    if arguments.folder:
        write_demo(arguments)
    else:
        write_fixtures()


if __name__ == "__main__":
    main()
