# Runs the reference's bench_reference.py unchanged, with two settings of its timing harness made explicit:
#
#  - the L2 flush between timed repetitions (POLAR_L2_FLUSH=read|write, default read). Triton's do_bench
#    flushes with cache.zero_() on a 256 MB buffer: a write, which leaves the L2 full of dirty lines that the
#    timed kernel's misses must write back. cuda_bench.cu's --flush read reads the buffer instead; this script
#    gives the reference the same flush (read: a reduction over the same buffer), so that both sides are timed
#    from the same L2 state. "write" leaves do_bench as it is.
#  - Triton's autotuning cache (POLAR_TRITON_CACHE=DIR): with TRITON_CACHE_AUTOTUNING=1 the reference's
#    autotuner stores each choice in DIR and later runs reuse it instead of re-timing every config. That keeps
#    the reference's kernel choices the same from run to run (they moved its times by 0.36-2.1x between runs
#    before) and saves the minutes of autotuning. The choices are still the reference's own, made on this GPU.
#
# Prints one JSON line {"bench":"ref_meta",...} saying what it did, then the reference's own output.
# usage: python3 ref_bench.py REF_DIR [mlp] [attn] [gqa]
import json
import os
import runpy
import sys

ref_dir = os.path.abspath(sys.argv[1])
flush = os.environ.get("POLAR_L2_FLUSH", "read")
if flush not in ("read", "write"):
    sys.exit(f"ref_bench.py: POLAR_L2_FLUSH must be read or write, not {flush!r}")
cache_dir = os.environ.get("POLAR_TRITON_CACHE", "")
if cache_dir:  # before triton is imported: it reads its knobs from the environment
    os.makedirs(cache_dir, exist_ok=True)
    os.environ["TRITON_CACHE_DIR"] = os.path.abspath(cache_dir)
    os.environ["TRITON_CACHE_AUTOTUNING"] = "1"
    os.environ.setdefault("TRITON_PRINT_AUTOTUNING", "1")  # the chosen configs go to the log
cached = [f for _, _, fs in os.walk(cache_dir) for f in fs if f.endswith(".autotune.json")] if cache_dir else []

import torch  # noqa: E402
import triton  # noqa: E402
from triton import runtime  # noqa: E402

if flush == "read":
    driver = runtime.driver.active
    driver.get_device_interface()  # the driver is created lazily; make it real before patching its class
    real = getattr(driver, "_obj", None) or driver
    if not hasattr(type(real), "clear_cache"):
        sys.exit(f"ref_bench.py: this Triton ({triton.__version__}) has no driver.clear_cache to give the read flush; "
                 "run with POLAR_L2_FLUSH=write")

    def read_flush(self, cache):
        cache.sum()  # reads all 256 MB through the L2 with the normal policy; writes one scalar

    type(real).clear_cache = read_flush
    if runtime.driver.active.clear_cache.__func__ is not read_flush:
        sys.exit("ref_bench.py: patching the L2 flush did not take; run with POLAR_L2_FLUSH=write")

print(json.dumps({"bench": "ref_meta", "l2_flush": flush, "triton": triton.__version__, "torch": torch.__version__,
                  "autotune_cache": bool(cache_dir), "autotune_cache_entries_before": len(cached),
                  "what": sys.argv[2:] or ["mlp", "attn", "gqa"]}), flush=True)
os.chdir(ref_dir)
sys.argv = [os.path.join(ref_dir, "bench_reference.py")] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
