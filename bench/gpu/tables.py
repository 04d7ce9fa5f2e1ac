#!/usr/bin/env python3
"""Markdown tables of a joined GPU benchmark run (bench/gpu/join.py output) for docs/benchmarks.md.

usage: python3 bench/gpu/tables.py joined.jsonl > tables.md
One table per kind (selective MLP, selective MHA attention, selective GQA) with the acceptance targets of
each point and whether they were met, then the block (decode step) record and the count of misses.
"""
import json
import sys


def pct(x):
    return "" if x is None else f"{100 * x:.1f}%"


def num(x, nd=4):
    return "" if x is None else f"{x:.{nd}f}"


def times(x):
    return "" if x is None else f"{x:.2f}"


def target(t):
    parts = []
    if "frac_min" in t:
        parts.append(f"≥{round(100 * t['frac_min'])}%")
    if "vs_ref_min" in t:
        parts.append(f"≥{t['vs_ref_min']:.1f}x ref")
    return ", ".join(parts)


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    mlp = [r for r in rows if r["bench"] == "mlp"]
    print("#### Selective MLP (fc1 + fc2), fp16\n")
    print("| model | batch | density | k | ms | GB/s | of limit | read floor of limit | target | dense (cuBLASLt) ms | x dense "
          "| reference ms | reference of limit | x reference | met |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in mlp:
        print(f"| {r['model']} | {r['batch']} | {r['density']:g} | {r['k']} | {num(r['ms'])} | {r['gbps']:.0f} | {pct(r['frac_of_limit'])} "
              f"| {pct(r.get('read_floor_frac_of_limit'))} | {target(r.get('targets', {}))} | {num(r.get('dense_ms'))} "
              f"| {times(r.get('speedup_vs_dense'))} | {num(r.get('ref_ms'))} | {pct(r.get('ref_frac_of_limit'))} "
              f"| {times(r.get('speedup_vs_ref'))} | {'yes' if r.get('targets_met') else 'no'} |")
    for kind, title in (("attn", "Selective head attention (MHA decode), fp16, head_dim 128"),
                        ("gqa", "Selective GQA decode (kept KV groups), fp16, head_dim 128")):
        print(f"\n#### {title}\n")
        print("| model | batch | context | density | kept | ms | GB/s | of limit | target | own dense ms | x dense | PyTorch SDPA ms "
              "| reference ms | reference of limit | x reference | met |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["bench"] != kind:
                continue
            print(f"| {r['model']} | {r['batch']} | {r['seq']} | {r['density']:g} | {r['kept']} | {num(r['ms'])} | {r['gbps']:.1f} "
                  f"| {pct(r['frac_of_limit'])} | {target(r.get('targets', {}))} | {num(r.get('dense_ms'))} | {times(r.get('speedup_vs_dense'))} "
                  f"| {num(r.get('torch_dense_ms'))} | {num(r.get('ref_ms'))} | {pct(r.get('ref_frac_of_limit'))} "
                  f"| {times(r.get('speedup_vs_ref'))} | {'yes' if r.get('targets_met') else 'no'} |")
    for r in rows:
        if r["bench"] == "block":
            p = r["parts_ms"]
            print("\n#### OPT-66B decode step (batch 64, context 1920)\n")
            print("| part (ms) | sparse | dense |\n|---|---|---|")
            print(f"| head router | {num(p['head_router'])} | — |")
            print(f"| attention | {num(p['attn_sparse'])} | {num(p['attn_dense'])} |")
            print(f"| MLP router (scores + top-k) | {num(p['mlp_router'])} ({num(p.get('mlp_router_scores'))} + "
                  f"{num(p['mlp_router'] - p.get('mlp_router_scores', 0))}) | — |")
            print(f"| MLP (fc1 + fc2) | {num(p['mlp_sparse'])} | {num(p['mlp_dense'])} |")
            print(f"| **attention + MLP step (timed as one sequence)** | **{num(r['attn_mlp_sparse_ms'])}** | "
                  f"**{num(r['attn_mlp_dense_ms'])}** → {r['attn_mlp_speedup']:.2f}x |")
            print(f"| QKV + out projections (both paths) | {num(p['qkv_proj'] + p['out_proj'])} | {num(p['qkv_proj'] + p['out_proj'])} |")
            print(f"| **whole block** | **{num(r['block_sparse_ms'])}** | **{num(r['block_dense_ms'])}** → {r['block_speedup']:.2f}x |")
        if r["bench"] == "summary":
            print(f"\nPoints checked: {r['points_checked']}, targets missed: {r['targets_missed']}.")


if __name__ == "__main__":
    main()
