"""Int8 ONNX graphs of the two local models, built on first use and cached: `int8_model_path`.

Why build locally instead of shipping files: the graphs are a pure function of the installed model
package, the quantization recipe and the onnxruntime that quantizes them, so they are made here from
the installed weights (paraphrase-MiniLM-L3-v2: the package's .onnx; all-MiniLM-L6-v2: its
sentence-transformers weights, exported to ONNX by `embedfit.embed.onnx_export`) and cached under
`embedfit.settings.default_model_cache()` (env EMBEDFIT_MODEL_CACHE).

Cache entries are keyed by the sha256 of the source file, the recipe and the onnxruntime version (and, for
the L6 export, the torch version), so an upgrade of any of them builds a new file instead of trusting
an old one; written atomically and checked on every load (`embedfit.embed.build_cache`).

The recipe (`Int8Recipe`): dynamic quantization (weights int8 ahead of time, activations quantized per
batch at run time) of the MatMuls with a constant weight only. The embedding lookups (Gather) and the
attention's activation x activation products stay fp32: they cost little time, and quantizing them cost
the most accuracy in our measurements; per-channel scales and 7-bit weights (`reduce_range`) keep the
int8 products from saturating on CPUs without VNNI. No graph rewriting beforehand: onnxruntime fuses the
quantized MatMuls itself when the session loads, and its BERT optimizer made the int8 graph no faster here
(scripts/bench_encoders.py; figures in its docstring).
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from embedfit.atomic import sha256_file
from embedfit.embed.build_cache import cached_build
from embedfit.errors import UnknownModelError

log = logging.getLogger(__name__)

#: int8 model name -> the fp32 model it is quantized from
INT8_OF = {
    "paraphrase-MiniLM-L3-v2-int8": "paraphrase-MiniLM-L3-v2",
    "all-MiniLM-L6-v2-int8": "all-MiniLM-L6-v2",
}
#: truncation length of each base model (its sentence-transformers max_seq_length)
MAX_SEQ_LENGTH = {"paraphrase-MiniLM-L3-v2": 128, "all-MiniLM-L6-v2": 256}


@dataclass(frozen=True)
class Int8Recipe:
    """How a graph is quantized (every field goes into the cache key).

    - `optimize`: graph rewriting before quantization: "none"; "ort" (onnxruntime's `quant_pre_process`: shape
      inference + basic optimizations); "bert" (onnxruntime's transformer optimizer: fused attention,
      LayerNorm, GELU, so the quantized graph runs the fused kernels too).
    - `op_types`: which operators are quantized; `matmul_const_b_only` leaves MatMuls of two activations
      (attention scores) in fp32.
    - `per_channel`: one scale per output column of each weight instead of one per matrix.
    - `reduce_range`: 7-bit weights, which avoids the int16 saturation of u8 x s8 products on CPUs
      without VNNI (AVX2 only, as here).
    - `weight_type`: "QInt8" (u8 activations x s8 weights) or "QUInt8" (u8 x u8, no saturation, other kernels).
    """

    optimize: str = "none"
    op_types: tuple[str, ...] = ("MatMul",)
    matmul_const_b_only: bool = True
    per_channel: bool = True
    reduce_range: bool = True
    weight_type: str = "QInt8"

    def to_json(self) -> dict:
        return {**asdict(self), "op_types": list(self.op_types)}


DEFAULT_RECIPE = Int8Recipe()


def fp32_onnx_path(base: str, cache_dir: Path | None = None) -> Path:
    """The fp32 ONNX graph of `base`: the package's file for L3, our checked export for L6."""
    if base == "paraphrase-MiniLM-L3-v2":
        from embedfit.embed.onnx_minilm import onnx_model_path

        return onnx_model_path()
    if base == "all-MiniLM-L6-v2":
        from embedfit.embed.onnx_export import export_l6_onnx

        return export_l6_onnx(cache_dir)
    raise UnknownModelError(f"no ONNX graph for {base!r}; int8 models exist for: {', '.join(INT8_OF.values())}")


@contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer logs a line per tensor to the *root* logger at INFO; keep that out of our logs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize(src: Path, dst: Path, recipe: Int8Recipe) -> None:
    """Write the dynamically quantized `src` to `dst` by `recipe` (see `Int8Recipe`)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix=".prep.", dir=dst.parent) as tmp:
        model_in = src
        if recipe.optimize == "ort":
            from onnxruntime.quantization.shape_inference import quant_pre_process

            model_in = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(model_in), skip_symbolic_shape=True)
        elif recipe.optimize == "bert":
            from onnxruntime.transformers.optimizer import optimize_model

            # num_heads/hidden_size 0: read from the graph (both MiniLMs: 12 heads, 384 wide)
            opt = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=1,
                                 use_gpu=False, only_onnxruntime=False)
            model_in = Path(tmp) / "pre.onnx"
            opt.save_model_to_file(str(model_in))
        elif recipe.optimize != "none":
            raise ValueError(f"unknown optimize={recipe.optimize!r}")
        with _quiet_root_logger():
            quantize_dynamic(str(model_in), str(dst), op_types_to_quantize=list(recipe.op_types),
                             per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                             weight_type=QuantType[recipe.weight_type],
                             # fused ops (contrib domain) have no inferred output type; they are all float here
                             extra_options={"MatMulConstBOnly": recipe.matmul_const_b_only,
                                            "DefaultTensorType": TensorProto.FLOAT})


def int8_model_path(int8_name: str, recipe: Int8Recipe = DEFAULT_RECIPE, cache_dir: Path | None = None) -> Path:
    """The cached int8 graph of `int8_name` (a key of `INT8_OF`), quantized now if needed (logged: it takes seconds)."""
    import onnxruntime

    if int8_name not in INT8_OF:
        raise UnknownModelError(f"no int8 recipe for {int8_name!r}; known: {', '.join(INT8_OF)}")
    src = fp32_onnx_path(INT8_OF[int8_name], cache_dir)
    key = {"source": src.name, "source_sha256": sha256_file(src), "recipe": recipe.to_json(),
           "onnxruntime": onnxruntime.__version__}

    def build(out: Path) -> None:
        log.info("quantizing %s to int8 (%s); done once, then cached", src.name, recipe)
        quantize(src, out, recipe)

    return cached_build(int8_name, key, build, cache_dir)
