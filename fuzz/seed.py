#!/usr/bin/env python3
"""Fills fuzz/corpus/<target>/ with seeds from the real captures' payloads (shared/captures)."""
import json, os, pathlib, sys

here = pathlib.Path(__file__).resolve().parent
caps = pathlib.Path(os.environ.get("NETFLOW_CAPTURES", here.parent.parent / "shared" / "captures"))
if not caps.is_dir():
    sys.exit(f"captures not found at {caps}")
for oracle in sorted(caps.glob("*.oracle.jsonl")):
    for n, line in enumerate(open(oracle)):
        p = json.loads(line)
        payload = bytes.fromhex(p["payload_hex"])
        v = p["version"]
        target = {5: ["v5"], 9: ["v9", "normalize"], 10: ["ipfix"]}[v]
        for t in target:
            d = here / "corpus" / t
            d.mkdir(parents=True, exist_ok=True)
            data = payload if t == "v5" else b"\x00" + payload
            (d / f"{oracle.stem.split('.')[0]}-{n:04}").write_bytes(data)
(here / "corpus" / "snapshot").mkdir(parents=True, exist_ok=True)
print("seeded", sum(1 for _ in (here / "corpus").rglob("*-*")), "files")
