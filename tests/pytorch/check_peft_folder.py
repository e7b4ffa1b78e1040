# Checks that a peft adapter folder (FedLora's or peft's) loads the way PeftModel.from_pretrained
# loads it onto a GPT-2 folder, with peft's rules written out (transformers and peft are not
# installable here): every target module matched by peft's suffix rule gets lora_A/lora_B of the
# rank and alpha its rank_pattern/alpha_pattern give, every tensor of adapter_model.safetensors is
# consumed with the shape peft's layer would have, and the adapter changes the logits. Run:
#     /usr/bin/python3 tests/pytorch/check_peft_folder.py MODEL_FOLDER ADAPTER_FOLDER
"""Prints the adapter's ranks and the logits of a fixed batch with and without it."""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedlora_safetensors  # noqa: E402
import hf_gpt2  # noqa: E402


def load_model(folder):
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    model = hf_gpt2.GPT2LMHeadModel(config)
    tensors, _ = fedlora_safetensors.load(os.path.join(folder, "model.safetensors"))
    state = {name: torch.from_numpy(value.copy()).float() for name, value in tensors.items()}
    own = model.state_dict()
    for name in own:
        if name.endswith(".attn.bias") and name not in state:
            state[name] = own[name]
    model.load_state_dict({n: v.to(own[n].dtype) for n, v in state.items()})
    return model


def main():
    model_folder, adapter_folder = sys.argv[1], sys.argv[2]
    with open(os.path.join(adapter_folder, "adapter_config.json")) as f:
        config = json.load(f)
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM", config
    assert config["fan_in_fan_out"] is True and config["bias"] == "none", config
    tensors, _ = fedlora_safetensors.load(os.path.join(adapter_folder, "adapter_model.safetensors"))
    model = load_model(model_folder)
    torch.manual_seed(0)
    tokens = torch.randint(0, model.config["vocab_size"], (2, 16))
    with torch.no_grad():
        before = model(tokens)[0]
    targets = [t for t in hf_gpt2.LORA_TARGETS if any(t == k or t.endswith("." + k) for k in config["target_modules"])]
    wrapped = hf_gpt2.add_lora(model, config["r"], config["lora_alpha"], targets, config.get("rank_pattern"), config.get("alpha_pattern"))
    consumed = set()
    with torch.no_grad():
        for name, layer in wrapped.items():
            for part in ("lora_A", "lora_B"):
                key = f"base_model.model.{name}.{part}.weight"
                weight = getattr(layer, part).weight
                value = torch.from_numpy(tensors[key].copy())
                assert tuple(value.shape) == tuple(weight.shape), f"{key}: {tuple(value.shape)} vs peft's {tuple(weight.shape)}"
                weight.copy_(value)
                consumed.add(key)
        after = model(tokens)[0]
    left = set(tensors) - consumed
    assert not left, f"tensors peft would not load: {sorted(left)}"
    ranks = sorted({layer.lora_A.weight.shape[0] for layer in wrapped.values()})
    print(f"{adapter_folder}: {len(wrapped)} LoRA layers, ranks {ranks}, all {len(tensors)} tensors loaded; "
          f"max |logits change| from the adapter {(after - before).abs().max().item():.4g}")


if __name__ == "__main__":
    main()
