"""The GPU catalogue: memory, bandwidth and peak rates per dtype of common GPUs, each with its source.

One home for what a GPU can do: the roofline time model (:mod:`bench.measure.roofline`), the
achieved-FLOP fraction of a measured step (:mod:`bench.measure.timing`) and ``--gpu NAME`` read it.
Every figure is a dense (no sparsity) datasheet or whitepaper number; ``source`` names the document it
comes from. Rates are FLOP/s; ``None`` means the GPU has no such unit (Pascal has no tensor cores, V100
has no bf16 at all). ``fp16_tc`` is the tensor-core rate with fp32 accumulation, which is what cuDNN and
cuBLAS use for autocast fp16 convolutions and matmuls in PyTorch; GeForce Turing/Ampere/Ada run it at
half their fp16-accumulate rate, and that half rate is the one listed.

Checked (this commit) against the documents named in ``source`` as the search tools of this workplace could
reach them: the A100 datasheet (via glennklockwood.com/garden/processors/A100, which cites it), the L40S
datasheet table (via mullet.se's copy of it), the H100 SXM5 whitepaper rates (via
glennklockwood.com/garden/processors/h100), the A100 80GB PCIe bandwidth (thundercompute.com's A100 table,
which agrees with the datasheet's 1,935 GB/s). Every other figure is as an earlier session wrote it from
the named document and was not re-read here.

``memory_bytes`` is the total ``nvidia-smi`` reports where a public source gives it (modal-labs/modal-client
pull request 2797: A100 40GB 40960 MiB, A100 80GB 81920 MiB, H100 81559 MiB, L40S 46068 MiB with ECC on),
else the datasheet's GB read as GiB (NVIDIA's "40GB" for A100 is 40960 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

T = 1e12
GB = 1e9

A100_DS = ("NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf), "
           "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
           "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf; fp16/bf16 without tensor cores: "
           "NVIDIA A100 Tensor Core GPU Architecture whitepaper, Table 1")
H100_DS = ("NVIDIA H100 Tensor Core GPU datasheet, https://resources.nvidia.com/en-us-tensor-core/"
           "nvidia-tensor-core-gpu-datasheet (dense = half the with-sparsity figures); fp16/bf16 without tensor "
           "cores: NVIDIA H100 Tensor Core GPU Architecture whitepaper (gtc22-whitepaper-hopper), Table 3")
H200_DS = ("NVIDIA H200 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h200/ "
           "(dense = half the with-sparsity figures); fp16 without tensor cores as H100 SXM (same GH100 die, clocks); "
           "memory: the datasheet's 141GB read as GiB like A100's (141e9 bytes, 131 GiB, was below what an H200 holds; "
           "nvidia-smi's total for an H200 was not found in a public source)")
A100_80_PCIE_DS = ("NVIDIA A100 Tensor Core GPU datasheet (as A100_DS): A100 80GB PCIe 1,935 GB/s (SXM: 2,039 GB/s), "
                   "same rates as the SXM part")
SMI_MEMORY = "memory: nvidia-smi total from modal-labs/modal-client pull request 2797"
L40S_DS = ("NVIDIA L40S datasheet, https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413 "
           "(dense = half the with-sparsity figures)")
V100_DS = ("NVIDIA Tesla V100 GPU datasheet (tesla-v100-datasheet-letter-fnl-web.pdf), "
           "https://images.nvidia.com/content/technologies/volta/pdf/tesla-v100-datasheet-letter-fnl-web.pdf; "
           "fp16 without tensor cores: NVIDIA Tesla V100 GPU Architecture whitepaper, Table 1 (2x fp32)")
DGX2_DS = ("NVIDIA DGX-2 datasheet (dgx-2-datasheet-us-nvidia-955420-r2-web-new.pdf): 16 x V100 32GB SXM3, "
           "2 PFLOPS tensor, 14.4 TB/s aggregate HBM2 bandwidth (per GPU: /16); fp32 and fp16 as V100 SXM2 datasheet")
TURING_WP = ("NVIDIA Turing GPU Architecture whitepaper (technologies/turing-architecture/"
             "NVIDIA-Turing-Architecture-Whitepaper.pdf), Appendix A, Table 1 (RTX 2080 Ti Founders Edition): "
             "fp16 tensor with fp32 accumulate is half the fp16-accumulate rate on GeForce")
QRTX6000_DS = ("NVIDIA Quadro RTX 6000 datasheet (quadro-rtx-6000-us-nvidia-704093-r4-web.pdf): 130.5 tensor "
               "TFLOPS, 16.3 fp32 TFLOPS, 672 GB/s; fp16 without tensor cores 2x fp32 (Turing whitepaper). The active "
               "(260 W) card, as nnU-Net's benchmark column names it; the passive server card (250 W) is slower: 14.9 fp32, "
               "119.4 tensor TFLOPS, 624 GB/s (Leadtek's Quadro RTX 6000 passive specification)")
TITANRTX_DS = ("NVIDIA TITAN RTX product page, https://www.nvidia.com/en-us/deep-learning-ai/products/titan-rtx/ "
               "(130 tensor TFLOPS, 24 GB, 672 GB/s); fp32 16.3 TFLOPS (4608 cores x 1770 MHz boost x 2)")
GA102_WP = ("NVIDIA Ampere GA102 GPU Architecture whitepaper (NVIDIA-ampere-GA102-GPU-Architecture-Whitepaper-V1.pdf), "
            "Table 9 (RTX 3090): dense fp16/bf16 tensor with fp32 accumulate 71 TFLOPS")
ADA_WP = ("NVIDIA Ada GPU Architecture whitepaper (ada-lovelace-architecture-whitepaper), Appendix A, Table 2 "
          "(RTX 4090): dense fp16/bf16 tensor with fp32 accumulate 165.2 TFLOPS")
TITANXP_DS = ("NVIDIA TITAN Xp product page (12 GB GDDR5X, 547.7 GB/s, 3840 cores x 1582 MHz boost = 12.1 fp32 "
              "TFLOPS); fp16 at 1/64 of fp32 on compute capability 6.1: CUDA C++ Programming Guide, "
              "'Arithmetic Instructions' throughput table")
P100_DS = ("NVIDIA Tesla P100 PCIe datasheet (nvidia-tesla-p100-PCIe-datasheet.pdf): 16 GB, 732 GB/s, 9.3 fp32 / "
           "18.7 fp16 TFLOPS")


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    bandwidth_bytes_per_s: float
    fp32: float
    fp16: float  # fp16 on the CUDA cores (no tensor cores)
    bf16: float | None  # bf16 on the CUDA cores; None: no bf16 arithmetic at all
    tf32_tc: float | None  # tensor cores, tf32 (what cuDNN uses for fp32 convolutions by default)
    fp16_tc: float | None  # tensor cores, fp16 inputs with fp32 accumulation
    bf16_tc: float | None
    source: str
    aliases: tuple[str, ...] = ()  # substrings of torch.cuda.get_device_name() that mean this GPU


CATALOGUE: dict[str, GPU] = {g.name: g for g in (
    GPU("A100-40GB", 40 * 2**30, 1555 * GB, 19.5 * T, 78 * T, 39 * T, 156 * T, 312 * T, 312 * T, A100_DS,
        ("A100-SXM4-40GB", "A100-PCIE-40GB", "A100 40GB")),
    GPU("A100-80GB-PCIe", 81920 * 2**20, 1935 * GB, 19.5 * T, 78 * T, 39 * T, 156 * T, 312 * T, 312 * T,
        A100_80_PCIE_DS, ("A100-PCIE-80GB", "A100 80GB PCIe")),  # before A100-80GB: its alias "A100 80GB" matches too
    GPU("A100-80GB", 81920 * 2**20, 2039 * GB, 19.5 * T, 78 * T, 39 * T, 156 * T, 312 * T, 312 * T, A100_DS,
        ("A100-SXM4-80GB", "A100 80GB")),
    GPU("H100-SXM", 81559 * 2**20, 3350 * GB, 67 * T, 133.8 * T, 133.8 * T, 494.5 * T, 989.5 * T, 989.5 * T,
        f"{H100_DS}; {SMI_MEMORY}", ("H100 80GB HBM3", "H100 SXM", "H100-SXM")),
    GPU("H100-PCIe", 80 * 2**30, 2000 * GB, 51 * T, 102.4 * T, 102.4 * T, 378 * T, 756 * T, 756 * T, H100_DS,
        ("H100 PCIe", "H100-PCIE")),
    GPU("H200", 141 * 2**30, 4800 * GB, 67 * T, 133.8 * T, 133.8 * T, 494.5 * T, 989.5 * T, 989.5 * T, H200_DS,
        ("H200",)),
    GPU("L40S", 46068 * 2**20, 864 * GB, 91.6 * T, 91.6 * T, 91.6 * T, 183 * T, 362 * T, 362 * T,
        f"{L40S_DS}; {SMI_MEMORY} (48 GB with ECC on)", ("L40S",)),
    GPU("V100-SXM2", 32 * 2**30, 900 * GB, 15.7 * T, 31.4 * T, None, None, 125 * T, None, V100_DS,
        ("V100-SXM2",)),
    GPU("V100-SXM3", 32 * 2**30, 900 * GB, 15.7 * T, 31.4 * T, None, None, 125 * T, None, DGX2_DS,
        ("V100-SXM3",)),
    GPU("V100-PCIe", 32 * 2**30, 900 * GB, 14 * T, 28 * T, None, None, 112 * T, None, V100_DS, ("V100-PCIE",)),
    GPU("Quadro-RTX-6000", 24 * 2**30, 672 * GB, 16.3 * T, 32.6 * T, None, None, 130.5 * T, None, QRTX6000_DS,
        ("Quadro RTX 6000",)),
    GPU("Titan-RTX", 24 * 2**30, 672 * GB, 16.3 * T, 32.6 * T, None, None, 130 * T, None, TITANRTX_DS,
        ("TITAN RTX",)),
    GPU("RTX-2080-Ti", 11 * 2**30, 616 * GB, 14.2 * T, 28.5 * T, None, None, 56.9 * T, None, TURING_WP,
        ("2080 Ti",)),
    GPU("RTX-3090", 24 * 2**30, 936 * GB, 35.6 * T, 35.6 * T, 35.6 * T, 35.6 * T, 71 * T, 71 * T, GA102_WP,
        ("RTX 3090",)),
    GPU("RTX-4090", 24 * 2**30, 1008 * GB, 82.6 * T, 82.6 * T, 82.6 * T, 82.6 * T, 165.2 * T, 165.2 * T, ADA_WP,
        ("RTX 4090",)),
    GPU("Titan-Xp", 12 * 2**30, 547.7 * GB, 12.1 * T, 12.1 * T / 64, None, None, None, None, TITANXP_DS,
        ("TITAN Xp",)),
    GPU("P100", 16 * 2**30, 732 * GB, 9.3 * T, 18.7 * T, None, None, None, None, P100_DS, ("P100",)),
)}


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


def known() -> str:
    """The catalogue's names in one line (what an unknown name is answered with)."""
    return ", ".join(CATALOGUE)


def find(name: str) -> GPU | None:
    """A catalogue entry by its name (case, spaces and dashes ignored) or by a live device's name
    (``torch.cuda.get_device_name()``, e.g. "NVIDIA A100-SXM4-80GB"), or None."""
    n = _norm(name)
    for g in CATALOGUE.values():
        if _norm(g.name) == n:
            return g
    best = [g for g in CATALOGUE.values() for a in g.aliases if _norm(a) in n]
    return best[0] if best else None


def lookup(name: str) -> GPU:
    """:func:`find`, or a ValueError listing the known names."""
    g = find(name)
    if g is None:
        raise ValueError(f"unknown GPU {name!r}; known: {known()}")
    return g


class Rate(NamedTuple):
    flops_per_s: float
    tensor_core: bool  # the rate is a tensor-core rate
    note: str  # why it is not the dtype's own fast path ("" when it is)


def rate(gpu: GPU, precision: str, tensor_core: bool) -> Rate:
    """The peak rate an operation of ``precision`` gets on ``gpu`` (with ``tensor_core``: a convolution or
    matmul, which cuDNN/cuBLAS put on tensor cores where they can), and a note when it is not the
    dtype's own fast path. fp32 convolutions use tf32 tensor cores (PyTorch's default
    ``torch.backends.cudnn.allow_tf32 = True``). A dtype the GPU cannot run fast is predicted at the
    rate it really gets: fp16 on Pascal's GP102 (1/64 rate) and bf16 on pre-Ampere GPUs run their
    convolutions and element-wise math in fp32 (cuDNN's pseudo-half configuration; PyTorch's bf16
    kernels compute in fp32 registers)."""
    tc = {"fp32": gpu.tf32_tc, "fp16": gpu.fp16_tc, "bf16": gpu.bf16_tc}[precision]
    plain = {"fp32": gpu.fp32, "fp16": gpu.fp16, "bf16": gpu.bf16}[precision]
    if tensor_core and tc:
        return Rate(tc, True, "")
    if plain and plain >= gpu.fp32:
        return Rate(plain, False, "")
    return Rate(gpu.fp32, False, f"{gpu.name} has no fast {precision}: its {precision} work is predicted at its fp32 rate")


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """The datasheet tensor-core peak of a named device at ``precision`` (None for unknown devices)."""
    gpu = find(device_name) if device_name else None
    return rate(gpu, precision, True).flops_per_s if gpu else None
