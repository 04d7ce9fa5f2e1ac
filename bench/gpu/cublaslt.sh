# Sourced by bench/gpu.sh and bench/gpu/device_run.sh: exports POLAR_CUBLASLT (the cuBLASLt library the CUDA
# backend loads at run time) from the CUDA toolkit or the Python packages, unless it is set already.
if [ -z "${POLAR_CUBLASLT:-}" ]; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
    f=$(find "$d" -maxdepth 5 -name 'libcublasLt.so.1[0-9]*' 2>/dev/null | sort | head -1)
    if [ -n "$f" ]; then export POLAR_CUBLASLT="$f"; break; fi
  done
fi
