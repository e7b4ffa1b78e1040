#!/usr/bin/env python3
"""Builds test.jsonl, a closed-choice test set in MMLU's layout, from the shipped Dolly data.

Regenerate (byte-identical output) from the repository root with
    python3 data/dolly15k-choice/make_choice.py

For every record of dolly15k-fedit-10/global_test.json (80 records, 10 per category), the question
is its instruction and context, and the four choices are its own response and three distractors:
responses of training records (local_training_*.json) of the same category, the three whose length
in characters is closest to the right response's among 200 drawn at random, so that length alone
does not give the answer away. Choices are shuffled; `answer` is the index of the right one.
Seeded (random.Random(20231202)): the same file every time. Licence: CC BY-SA 3.0, as Dolly.
"""
import glob
import json
import os
import random

here = os.path.dirname(os.path.abspath(__file__))
dolly = os.path.join(here, "..", "dolly15k-fedit-10")
rng = random.Random(20231202)

with open(os.path.join(dolly, "global_test.json"), encoding="utf-8") as f:
    test = json.load(f)
train = []
for path in sorted(glob.glob(os.path.join(dolly, "local_training_*.json"))):
    with open(path, encoding="utf-8") as f:
        train.extend(json.load(f))

by_category = {}
for record in train:
    response = record["response"].strip()
    if response:
        by_category.setdefault(record["category"], []).append(response)
for responses in by_category.values():
    responses.sort()

lines = []
for record in test:
    right = record["response"].strip()
    pool = [r for r in by_category[record["category"]] if r != right]
    sample = rng.sample(pool, min(200, len(pool)))
    sample.sort(key=lambda r: (abs(len(r) - len(right)), r))
    distractors = []
    for candidate in sample:
        if candidate not in distractors:
            distractors.append(candidate)
        if len(distractors) == 3:
            break
    choices = [right] + distractors
    rng.shuffle(choices)
    lines.append(json.dumps({
        "question": record["instruction"],
        "context": record["context"],
        "choices": choices,
        "answer": choices.index(right),
        "subject": record["category"],
    }, ensure_ascii=False))

with open(os.path.join(here, "test.jsonl"), "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(lines) + "\n")
print(f"wrote {len(lines)} records to {os.path.join(here, 'test.jsonl')}")
