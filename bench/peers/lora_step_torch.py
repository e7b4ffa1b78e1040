# The PyTorch peer of FedLora's LoRA training-step benchmark. Run with Debian's PyTorch, from the
# repository root:
#     /usr/bin/python3 bench/peers/lora_step_torch.py [--steps 5] [--warmup 2] [--configs L4-C128,L6-C256,GPT2-124M]
# For each config it times one LoRA fine-tuning step (forward + backward + AdamW on the adapters,
# base frozen) with torch.set_num_threads(1) and (2), and prints one JSON line per measurement
# and one "best" line per config: tokens/s = B*T / median step time. loadavg_1m is the machine's
# load when the measurement ended: on a shared machine, 2 threads lose badly when it is above 1.
# The "best" line also gives sgemm_gflops: torch's best matmul rate (1 or 2 threads) on the step's dense
# shapes, from which the C# side derives the most tokens/s a step built on that BLAS can reach.
"""The model is tests/pytorch/fedlora_gpt.py's GPT (the one the C# GPT is tested against): pre-LN
GPT-2 blocks, tanh GELU, tied head, LoRA r=16 alpha=32 on c_attn, attn.c_proj, c_fc, mlp.c_proj;
GPT-2 initialisation; random tokens; the loss counts every target. Vocabulary 257 for the byte-level
configs, 50,257 for GPT2-124M (GPT-2 124M's shapes: L=12, C=768, 12 heads, B=4, T=256), whose
full (B*T, V) logits PyTorch holds. peak_rss_bytes is the process's peak resident memory so far."""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "pytorch"))
import fedlora_gpt  # noqa: E402

CONFIGS = [
    dict(name="L4-C128", n_layer=4, n_embd=128, n_head=4, seq_len=256, batch=8, rank=16, vocab=257),
    dict(name="L6-C256", n_layer=6, n_embd=256, n_head=8, seq_len=256, batch=8, rank=16, vocab=257),
    dict(name="GPT2-124M", n_layer=12, n_embd=768, n_head=12, seq_len=256, batch=4, rank=16, vocab=50257),
]


def measure(config, threads, steps, warmup, seed=1337):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    vocab = config["vocab"]
    gpt_config = fedlora_gpt.GPTConfig(vocab_size=vocab, context_length=config["seq_len"], n_layer=config["n_layer"],
                                       n_embd=config["n_embd"], n_head=config["n_head"])
    lora = fedlora_gpt.LoraConfig(rank=config["rank"], alpha=2.0 * config["rank"])
    model = fedlora_gpt.GPT(gpt_config, lora)
    fedlora_gpt.init_gpt2(model)
    model.freeze_base()
    adapters = [p for _, p in model.lora_parameters()]
    optimizer = torch.optim.AdamW(adapters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    tokens = torch.randint(0, vocab, (config["batch"], config["seq_len"] + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step():
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(inputs, targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return dict(peer="torch", config=config["name"], threads=threads, n_layer=config["n_layer"], n_embd=config["n_embd"],
                n_head=config["n_head"], seq_len=config["seq_len"], batch=config["batch"], rank=config["rank"], vocab=vocab,
                steps=steps, step_ms_median=round(median * 1e3, 2), step_ms_min=round(min(times) * 1e3, 2),
                tokens_per_s=round(config["batch"] * config["seq_len"] / median, 1), final_loss=round(loss, 4),
                lora_params=sum(p.numel() for p in adapters), torch=torch.__version__,
                loadavg_1m=round(os.getloadavg()[0], 2), peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def sgemm_rate(config, repeats=3):
    """The best GFLOP/s torch's BLAS reaches on the step's dense products (B*T rows against C x 3C, C x 4C,
    4C x C and the head's C x V), with 1 and with 2 threads (on the 2-core VM one thread often reaches what
    two do), each the best of a few runs: the CPU's matmul rate at the step's shapes, which bounds the
    tokens/s of a step built on that BLAS."""
    rows, c, v = config["batch"] * config["seq_len"], config["n_embd"], config["vocab"]
    best = 0.0
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for inner, outer in [(c, 3 * c), (c, 4 * c), (4 * c, c), (c, v)]:
            a, b = torch.rand(rows, inner), torch.rand(inner, outer)
            a @ b
            for _ in range(repeats):
                start = time.perf_counter()
                a @ b
                best = max(best, 2.0 * rows * inner * outer / (time.perf_counter() - start) / 1e9)
    return round(best, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--configs", default="L4-C128,L6-C256", help="comma-separated configs to run")
    args = parser.parse_args()
    chosen = args.configs.split(",")
    for config in [c for c in CONFIGS if c["name"] in chosen]:
        results = [measure(config, threads, args.steps, args.warmup) for threads in (1, 2)]
        for result in results:
            print(json.dumps(result), flush=True)
        best = max(results, key=lambda r: r["tokens_per_s"])
        print(json.dumps(dict(best, best=True, sgemm_gflops=sgemm_rate(config))), flush=True)


if __name__ == "__main__":
    main()
