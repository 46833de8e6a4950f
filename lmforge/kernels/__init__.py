"""Optional C++ kernels for CPU inference (paged attention, fused RMSNorm / RoPE / SwiGLU), built on first use.

Everything here has a pure-PyTorch equivalent elsewhere in lmforge that computes the same thing; the kernels only
make it faster, and every caller falls back when they cannot be built (see cpu_kernels.py).
"""
