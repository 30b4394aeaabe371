#!/usr/bin/env python3
"""The same-run baseline for `medgemma-server bench --synthetic`: Hugging Face
transformers (eager generate, its default cache) on a random-weight Gemma 3 decoder
of the same shapes, greedy, end-of-sequence ignored, every request in one batch.

Usage: python3 tools/bench/transformers_baseline.py crates/model/presets/medgemma-4b.json \
           [--device cuda] [--dtype bf16] [--concurrency 1,64] [--prompt-tokens 128] \
           [--max-tokens 128] [--json out.json]

Prints one line per batch size with aggregate generated tokens per second (all tokens
over the wall time of generate(), prefill included) and writes them as JSON. Only the
text decoder is built: the benchmark's requests are text, and the vision tower does
not run for them.
"""

import argparse
import json
import time

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig


def build(config_path, device, dtype):
    cfg = json.load(open(config_path))
    text = cfg.get("text_config", cfg)
    text = {k: v for k, v in text.items() if k not in ("model_type", "architectures")}
    config = Gemma3TextConfig(**text)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device(device):
        model = Gemma3ForCausalLM(config)
    return model.to(dtype).eval(), config


def run(model, config, batch, prompt_tokens, max_tokens, device):
    gen = torch.Generator().manual_seed(batch)
    ids = torch.randint(10, config.vocab_size - 100, (batch, prompt_tokens), generator=gen)
    ids = ids.to(device)
    mask = torch.ones_like(ids)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                         min_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    generated = (out.shape[1] - prompt_tokens) * batch
    return {"concurrency": batch, "generated_tokens": generated, "wall_s": wall,
            "output_tok_s": generated / wall}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--concurrency", default="1,64")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json")
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    model, config = build(args.config, args.device, dtype)
    with torch.inference_mode():
        run(model, config, 1, 8, 4, args.device)  # warm-up
        rows = []
        for c in [int(x) for x in args.concurrency.split(",")]:
            r = run(model, config, c, args.prompt_tokens, args.max_tokens, args.device)
            rows.append(r)
            print(f"transformers {c:>3} streams: {r['output_tok_s']:8.1f} tokens/s "
                  f"({r['generated_tokens']} tokens in {r['wall_s']:.2f} s)", flush=True)
    import transformers
    doc = {"engine": f"transformers {transformers.__version__}, torch {torch.__version__}",
           "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "dtype": args.dtype, "prompt_tokens": args.prompt_tokens,
           "max_tokens": args.max_tokens, "levels": rows}
    if args.json:
        json.dump(doc, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
