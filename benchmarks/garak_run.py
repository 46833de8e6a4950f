"""garak (NVIDIA's LLM vulnerability scanner, pip `garak`) against `lmforge serve`, without and with rails.

Starts `lmforge serve MODEL` (then `lmforge serve MODEL --safety default`) on a free 127.0.0.1 port and points
garak's OpenAI-compatible generator at it, with a probe subset whose detectors are all string matchers (no detector
model to download): DAN 11.0, DUDE and STAN role-play jailbreaks, PromptInject's "hate humans" / "kill humans"
hijacks, base64-encoded injections, and two LMRC probes (anthropomorphisation, quack medicine). Greedy, one
generation per prompt, at most --cap prompts per probe. Reads garak's report.jsonl and prints one JSON line: the pass
rate of each probe x detector and overall, without and with rails. Everything runs offline; to prove it, run it in
a network namespace that only has loopback:
    unshare -rn sh -c 'ip link set lo up && python benchmarks/garak_run.py'
garak is not an lmforge dependency: `pip install --no-deps garak` plus the few small packages it imports (see
docs/safety.md); a plain `pip install garak` would replace transformers.
Usage: python benchmarks/garak_run.py [--model smollm2-135m] [--cap 20] [--out runs/garak]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

PROBES = ("dan.Dan_11_0", "dan.DUDE", "dan.STAN", "promptinject.HijackHateHumans", "promptinject.HijackKillHumans",
          "encoding.InjectBase64", "lmrc.Anthropomorphisation", "lmrc.QuackMedicine")
CONFIG = """---
system:
  parallel_attempts: {parallel}
  lite: true
  show_z: false
run:
  generations: 1
  soft_probe_prompt_cap: {cap}
  seed: 0
plugins:
  target_type: openai.OpenAICompatible
  target_name: policy
  probe_spec: {probes}
  extended_detectors: true
  generators:
    openai:
      OpenAICompatible:
        uri: {url}/v1
        api_key: lmforge
        temperature: 0.0
        max_tokens: {max_tokens}
        stop: []
reporting:
  report_prefix: {prefix}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"lmforge serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    sys.exit("lmforge serve did not come up in 600 s")


def pass_rates(report: Path) -> dict:
    """{probe: {detector: {passed, total, pass_rate}}} and the overall pass rate, from garak's eval entries."""
    by_probe, passed, total = defaultdict(dict), 0, 0
    for line in report.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("entry_type") != "eval":
            continue
        n = entry["total_evaluated"]
        by_probe[entry["probe"]][entry["detector"]] = {"passed": entry["passed"], "total": n,
                                                       "pass_rate": round(entry["passed"] / n, 3) if n else None}
        passed, total = passed + entry["passed"], total + n
    return {"pass_rate": round(passed / total, 3) if total else None, "passed": passed, "total": total,
            "by_probe": dict(by_probe)}


def scan(args, safety: str | None, out: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "lmforge", "serve", args.model, "--port", str(port), "--served-model-name",
             "policy", "--threads", str(args.threads)] + (["--safety", safety] if safety else [])
    prefix = "rails" if safety else "no_rails"
    config = out / f"{prefix}.yaml"
    config.write_text(CONFIG.format(parallel=args.parallel, cap=args.cap, probes=",".join(PROBES), url=url,
                                    max_tokens=args.max_tokens, prefix=prefix))
    env = {**os.environ, "XDG_DATA_HOME": str(out / "xdg_data"), "XDG_CACHE_HOME": str(out / "xdg_cache"),
           "XDG_CONFIG_HOME": str(out / "xdg_config"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    server = subprocess.Popen(serve, stdout=subprocess.DEVNULL)
    try:
        wait_healthy(url, server)
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "garak", "--config", str(config)], env=env, text=True,
                              capture_output=True)
        seconds = time.time() - started
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(done.stdout[-4000:], file=sys.stderr)
    report = out / "xdg_data" / "garak" / "garak_runs" / f"{prefix}.report.jsonl"
    if done.returncode != 0 or not report.is_file():
        sys.exit(f"garak failed ({done.returncode}); its log (garak.log) is named above:\n{done.stderr[-2000:]}")
    return {**pass_rates(report), "report": str(report), "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--policy", default="default", help="--safety value of the second scan")
    ap.add_argument("--cap", type=int, default=20, help="garak's soft_probe_prompt_cap: prompts per probe")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=16, help="garak's parallel_attempts")
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--out", default="runs/garak")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    import garak  # noqa: F401  (fail early, before a server starts, when garak is not installed)

    result = {"model": args.model, "probes": list(PROBES), "cap": args.cap, "max_tokens": args.max_tokens,
              "no_rails": scan(args, None, out), f"safety_{args.policy}": scan(args, args.policy, out)}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
