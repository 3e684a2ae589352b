"""Deterministic payload generator for the demo: one JSON payload per line on stdout.

    python payloads.py --count 100 --seed 7 > payloads.jsonl

Same seed, same payloads. Latencies are log-normal per customer (a slow one, a fast one), a few
requests fail, and users thank or curse the app.
"""

import argparse
import json
import random

CUSTOMERS = {"acme": 4.0, "globex": 12.0, "initech": 30.0}


def payloads(count, seed, fail_every, timeout_at=0, sleep_ms=1500):
    rng = random.Random(seed)
    for i in range(count):
        customer = rng.choice(sorted(CUSTOMERS))
        median = CUSTOMERS[customer]
        writes = rng.randint(1, 4)
        latencies = [round(rng.lognormvariate(0, 0.6) * median, 3) for _ in range(writes)]
        p = {
            "requestId": f"req-{seed}-{i:05d}",
            "customer": customer,
            "dbLatencyMs": latencies,
            "userId": f"user-{rng.randint(1, 50):03d}",
        }
        if rng.random() < 0.5:
            p["objectKey"] = f"uploads/{customer}/{i:05d}.json"
        roll = rng.random()
        if roll < 0.3:
            p["sentiment"] = "thanks"
        elif roll < 0.4:
            p["sentiment"] = "curses"
        if fail_every and (i + 1) % fail_every == 0:
            p["fail"] = True
        if timeout_at and i + 1 == timeout_at:
            p["sleepMs"] = sleep_ms
        yield p


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fail-every", type=int, default=10, help="every Nth request fails (0: never)")
    ap.add_argument("--timeout-at", type=int, default=0,
                    help="the Nth request sleeps --sleep-ms (past a short --timeout: a timeout)")
    ap.add_argument("--sleep-ms", type=int, default=1500)
    args = ap.parse_args()
    for p in payloads(args.count, args.seed, args.fail_every, args.timeout_at, args.sleep_ms):
        print(json.dumps(p, separators=(",", ":")))


if __name__ == "__main__":
    main()
