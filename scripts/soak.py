#!/usr/bin/env python3
"""Soak test: random requests against a running server for a while, sampling the
server's resident memory and KV-cache metrics, to show that memory stays flat
(the KV pool is allocated once; nothing leaks per request).

Usage:
  medgemma-server serve --model tests/fixtures/tiny-gemma3 --port 8000 &
  python3 scripts/soak.py --url http://127.0.0.1:8000 --pid $! --minutes 10

Standard library only. Prints one line per sample and a summary; exits 1 if the
resident memory at the end exceeds the level after warm-up by more than --slack-mib
or if KV blocks are still held once the load stops.
"""

import argparse
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metric(url, name):
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def one_request(url, model, rng):
    words = " ".join(rng.choice(["scan", "lung", "chest", "normal", "fracture", "left"])
                     for _ in range(rng.randint(1, 60)))
    body = {
        "model": model,
        "prompt": words,
        "max_tokens": rng.randint(1, 64),
        "temperature": rng.choice([0.0, 0.7, 1.0]),
        "stream": rng.random() < 0.5,
    }
    req = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            if body["stream"] and rng.random() < 0.3:
                r.read(200)  # hang up early: the server must free the sequence
                return "dropped"
            r.read()
            return "ok"
    except urllib.error.HTTPError as e:
        return f"http {e.code}"
    except OSError as e:
        return f"error {e}"


def worker(url, model, seed, stop, counts, lock):
    rng = random.Random(seed)
    while not stop.is_set():
        outcome = one_request(url, model, rng)
        with lock:
            counts[outcome] = counts.get(outcome, 0) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sample-seconds", type=float, default=30.0)
    ap.add_argument("--slack-mib", type=float, default=32.0)
    args = ap.parse_args()
    with urllib.request.urlopen(f"{args.url}/v1/models", timeout=10) as r:
        model = json.load(r)["data"][0]["id"]
    stop, lock, counts = threading.Event(), threading.Lock(), {}
    threads = [threading.Thread(target=worker, args=(args.url, model, i, stop, counts, lock),
                                daemon=True) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    start = time.time()
    samples = []
    while time.time() - start < args.minutes * 60:
        time.sleep(args.sample_seconds)
        s = (time.time() - start, rss_kib(args.pid) / 1024,
             metric(args.url, "medgemma_kv_blocks_used"),
             metric(args.url, "medgemma_kv_blocks_total"))
        samples.append(s)
        with lock:
            done = dict(counts)
        print(f"t={s[0]:6.0f}s rss={s[1]:8.1f} MiB kv_used={s[2]:.0f}/{s[3]:.0f} {done}",
              flush=True)
    stop.set()
    for t in threads:
        t.join(timeout=150)
    time.sleep(2)
    used_after = metric(args.url, "medgemma_kv_blocks_used")
    warm = samples[min(1, len(samples) - 1)][1]
    end = samples[-1][1]
    peak = max(s[1] for s in samples)
    print(f"rss after warm-up {warm:.1f} MiB, at the end {end:.1f} MiB, peak {peak:.1f} MiB; "
          f"KV blocks held after the load: {used_after:.0f}; requests: {counts}")
    ok = end - warm <= args.slack_mib and used_after == 0
    print("PASS" if ok else "FAIL")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
