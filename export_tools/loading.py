"""What the command line loads: models from ``MODEL`` specs, checkpoints, and input shapes.

Every problem raises :class:`UsageError` with one line naming the problem and the fix. Example inputs
are sized before they are allocated: more than :data:`MAX_INPUT_MB` MiB in all is refused unless the
limit is raised (``--max-input-mb``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from export_tools.errors import RunnerUnavailableError, UsageError, one_line
from export_tools.parity.inputs import MAX_INPUT_MB, check_input_size
from export_tools.traps import unwrap_model


@dataclass
class LoadedModel:
    """A model ready to export: the module, its input names, and example inputs where known."""

    module: torch.nn.Module
    input_names: list[str]
    example: dict[str, torch.Tensor] = field(default_factory=dict)
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    source: str = ""
    #: forward parameters with a default: inputs only when ``--input`` names them
    optional: tuple[str, ...] = ()
    #: what loading changed, for the user (e.g. the module taken out of a DataParallel wrapper)
    note: str | None = None


def load_model(spec: str, weights: str | None = None) -> LoadedModel:
    """Loads ``package.module:factory``, ``path/to/file.py:factory`` or ``builtin:<op>``."""
    if spec.startswith("builtin:"):
        if weights:
            raise UsageError("--weights does not apply to builtin: models (they have no parameters); drop it")
        return _builtin(spec.removeprefix("builtin:"))
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(
            f"MODEL {spec!r} is not 'package.module:factory', 'path/to/file.py:factory' or 'builtin:<op>'; "
            "e.g. mypkg.models:build_head"
        )
    factory = _resolve(_import(target), attr, spec)
    if not callable(factory):
        raise UsageError(f"{spec!r} is a {type(factory).__name__}, not a callable factory; point at a function")
    try:
        module = factory()
    except SystemExit as exc:
        raise UsageError(f"factory {spec!r} called sys.exit({exc.code!r}); it must return a model") from None
    except Exception as exc:
        raise UsageError(
            f"factory {spec!r} raised {type(exc).__name__}: {exc}; fix the factory or its defaults"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"factory {spec!r} returned {type(module).__name__}; it must return a torch.nn.Module")
    module, note = unwrap_model(module)
    if weights:
        load_weights(module, weights)
    names, optional = _forward_names(module)
    example, dynamic = _own_examples(module, names)
    return LoadedModel(module.eval(), names, example, dynamic, source=spec, optional=optional, note=note)


def _own_examples(module: torch.nn.Module, names: list[str]) -> tuple[dict, dict]:
    """Example inputs and dynamic dims a module gives itself (``example_inputs()``, ``dynamic_dims()``: a
    :class:`~export_tools.decoding.PoseDecoder` with a crop), by input name; empty when it gives none."""
    make = getattr(module, "example_inputs", None)
    if not callable(make):
        return {}, {}
    try:
        tensors = tuple(make())
    except UsageError:  # it takes the network's own inputs: --input gives them
        return {}, {}
    dims = module.dynamic_dims() if callable(getattr(module, "dynamic_dims", None)) else [None] * len(tensors)
    if len(tensors) != len(names):
        return {}, {}
    return dict(zip(names, tensors)), {n: dict(d) for n, d in zip(names, dims) if d}


def _builtin(name: str) -> LoadedModel:
    from custom_ops import list_ops
    from export_tools.models import OpModel

    names = [s.name for s in list_ops()]
    if name not in names:
        raise UsageError(f"builtin:{name} is not a kpx op; choose one of {', '.join(names)} (see `kpx ops`)")
    spec = next(s for s in list_ops() if s.name == name)
    sample = spec.export_sample()
    model = OpModel(spec, sample)
    input_names = model.input_names()
    dynamic = {}
    for n, dims in zip(input_names, sample.dynamic or (), strict=False):
        if dims:
            dynamic[n] = {int(d): str(s) for d, s in dims.items()}
    return LoadedModel(model, input_names, dict(zip(input_names, model.example_inputs())), dynamic, f"builtin:{name}")


def _import(target: str) -> Any:
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"model file {target!r} does not exist; check the path")
        name = "kpx_user_" + re.sub(r"\W", "_", path.stem)
        if path.suffix != ".py":
            raise UsageError(f"model file {target!r} must be a .py file (or use package.module:factory)")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SystemExit as exc:
            raise UsageError(f"importing {target!r} called sys.exit({exc.code!r}) (argparse at import time?); "
                             "guard that code with `if __name__ == '__main__':`") from None  # fmt: skip
        except Exception as exc:
            raise UsageError(f"importing {target!r} raised {type(exc).__name__}: {exc}") from None
        return module
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`: modules in the working directory are found
    try:
        return importlib.import_module(target)
    except SystemExit as exc:
        raise UsageError(f"importing {target!r} called sys.exit({exc.code!r}) (argparse at import time?); "
                         "guard that code with `if __name__ == '__main__':`") from None  # fmt: skip
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"cannot import {target!r} ({exc}); install the package or run kpx from its directory"
        ) from None
    except Exception as exc:
        raise UsageError(f"importing {target!r} raised {type(exc).__name__}: {exc}") from None


def _resolve(module: Any, attr: str, spec: str) -> Any:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            available = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise UsageError(f"{spec!r}: {part!r} not found; callables there: {', '.join(available[:12]) or 'none'}")
        obj = getattr(obj, part)
    return obj


def _forward_names(module: torch.nn.Module) -> tuple[list[str], tuple[str, ...]]:
    """Positional ``forward`` parameters (names, and the ones with a default). Raises for signatures the
    command line cannot feed: ``*args`` and required keyword-only parameters."""
    if hasattr(module, "input_names"):  # a method (OpModel) or a list (PoseDecoder)
        names = module.input_names() if callable(module.input_names) else module.input_names
        return list(names), ()
    params = list(inspect.signature(module.forward).parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        raise UsageError("forward(*args) cannot be fed by name; give the model a forward with named parameters "
                         "(a small wrapper module)")  # fmt: skip
    required_kw = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if required_kw:
        raise UsageError(f"forward has required keyword-only parameters {required_kw}; give them defaults or wrap "
                         "the model so that every input is positional")  # fmt: skip
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [p.name for p in positional], tuple(p.name for p in positional if p.default is not p.empty)


def load_weights(module: torch.nn.Module, path: str) -> None:
    """Loads a ``state_dict`` from ``.safetensors`` or a torch checkpoint with ``weights_only=True``.

    A checkpoint holding ``{"state_dict": ...}`` or ``{"model": ...}`` (mmpose, timm, detectron-style) is
    unwrapped. Arbitrary pickles are refused by ``weights_only=True``."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"weights file {path!r} does not exist; check the path")
    if file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_model
        except ImportError:
            raise RunnerUnavailableError(
                "reading .safetensors needs the safetensors package; fix: pip install safetensors"
            ) from None
        try:  # load_model, not load_file: it restores tied parameters that save_model stored once
            missing, unexpected = load_model(module, str(file), strict=False)
        except Exception as exc:
            raise UsageError(f"{path!r} is not a readable safetensors file for this model: {one_line(exc)}") from None
        _check_keys(path, list(missing), list(unexpected))
        return
    try:
        with warnings.catch_warnings():  # torch warns about the file's contents; the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights only load failed" in str(exc).lower():  # the file holds Python objects: never unpickled
            raise UsageError(
                f"{path!r} holds Python objects besides tensors, and kpx never runs code from a checkpoint; save a "
                "plain state_dict (torch.save(model.state_dict(), path)) or a .safetensors file"
            ) from None
        raise UsageError(
            f"{path!r} is not a readable PyTorch checkpoint ({type(exc).__name__}); save a plain state_dict "
            "(torch.save(model.state_dict(), path)) or a .safetensors file"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path!r} does not hold a state_dict of tensors; save model.state_dict()")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ
        raise UsageError(f"{path!r} does not fit the model ({one_line(exc, last=True)}); pass the checkpoint of "
                         "this architecture and configuration") from None  # fmt: skip
    _check_keys(path, result.missing_keys, result.unexpected_keys)


def _check_keys(path: str, missing: list[str], unexpected: list[str]) -> None:
    if missing or unexpected:
        raise UsageError(
            f"{path!r} does not fit the model: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}; "
            "pass the checkpoint of this architecture"
        )


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}  # fmt: skip


def parse_input(text: str) -> tuple[str, list[int], torch.dtype | None]:
    """``NAME:1x17x64x48`` or ``NAME:1x17x64x48:float16`` (a 0-d tensor: ``NAME:scalar``)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"--input {text!r} is not NAME:SHAPE[:DTYPE]; e.g. --input heatmaps:1x17x64x48")
    name, shape_text = parts[0], parts[1]
    dtype = None
    if len(parts) == 3:
        if parts[2] not in _DTYPES:
            raise UsageError(f"--input {text!r}: dtype {parts[2]!r} is not one of {', '.join(sorted(_DTYPES))}")
        dtype = _DTYPES[parts[2]]
    if shape_text == "scalar":
        return name, [], dtype
    try:
        shape = [int(d) for d in shape_text.lower().split("x")]
    except ValueError:
        raise UsageError(f"--input {text!r}: shape {shape_text!r} must be sizes joined by x, e.g. 1x17x64x48") from None
    if any(d < 0 for d in shape):
        raise UsageError(f"--input {text!r}: sizes must be >= 0")
    return name, shape, dtype


def parse_dynamic(text: str) -> tuple[str, dict[int, str]]:
    """``NAME:0,2,3`` (dims named ``NAME_dim0`` ...) or ``NAME:0=B,2=H,3=W`` (symbolic names, shared
    across inputs: the same name is the same size)."""
    name, sep, dims_text = text.partition(":")
    if not sep or not name or not dims_text:
        raise UsageError(f"--dynamic {text!r} is not NAME:DIMS; e.g. --dynamic heatmaps:0,2,3 or heatmaps:0=B,2=H")
    dims = {}
    for item in dims_text.split(","):
        index, eq, symbol = item.partition("=")
        if not index.strip().isdigit() or (eq and not re.fullmatch(r"[A-Za-z_]\w*", symbol)):
            raise UsageError(f"--dynamic {text!r}: {item!r} must be a dim index (2) or index=Name (2=H)")
        if int(index) in dims:
            raise UsageError(f"--dynamic {text!r} names dim {int(index)} twice; give each dim one name")
        dims[int(index)] = symbol if eq else f"{name}_dim{int(index)}"
    return name, dims


def make_inputs(
    loaded: LoadedModel, inputs: list[str], dynamic: list[str], *, seed: int = 0, max_mb: float = MAX_INPUT_MB
) -> tuple[tuple[torch.Tensor, ...], tuple | None, list[str]]:
    """Example tensors (seeded), ``dynamic_shapes`` and the input names used, from ``--input``/``--dynamic``.

    A forward parameter with a default is an input only when ``--input`` names it (and then every
    parameter before it must be an input too). A dynamic dim needs an example size of at least 2:
    torch.export specialises sizes 0 and 1, so a model that fixes such a dim would go unnoticed."""
    shapes = {}
    for text in inputs:
        name, shape, dtype = parse_input(text)
        if name not in loaded.input_names:
            raise UsageError(f"--input {name!r}: the model's inputs are {loaded.input_names}; use one of those names")
        if name in shapes:
            raise UsageError(f"--input {name!r} is given twice; give each input once")
        shapes[name] = (shape, dtype)
    try:
        itemsize = {n: torch.empty((), dtype=dtype or torch.float32).element_size() for n, (_, dtype) in shapes.items()}
        check_input_size({n: (shape, itemsize[n]) for n, (shape, _) in shapes.items()}, max_mb)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    given = [n for n in loaded.input_names if n in shapes or n not in loaded.optional or n in loaded.example]
    names = loaded.input_names[: max((loaded.input_names.index(n) + 1 for n in given), default=0)]
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for name in names:
        example = loaded.example.get(name)
        if name in shapes:
            shape, dtype = shapes[name]
            dtype = dtype or (example.dtype if example is not None else torch.float32)
            if dtype.is_floating_point:
                tensors.append(torch.randn(shape, generator=generator).to(dtype))
            elif dtype == torch.bool:
                tensors.append(torch.rand(shape, generator=generator) > 0.5)
            else:
                tensors.append(torch.randint(0, 8, shape, generator=generator).to(dtype))
        elif example is not None:
            tensors.append(example)
        else:
            raise UsageError(f"no shape for input {name!r}; add --input {name}:1x17x64x48 (its real shape)")
    specs = {n: dict(d) for n, d in loaded.dynamic.items() if n in names}
    named: dict[tuple[str, int], str] = {}
    for text in dynamic:
        name, dims = parse_dynamic(text)
        if name not in names:
            raise UsageError(f"--dynamic {name!r}: the model's inputs are {names}; use one of those")
        rank = tensors[names.index(name)].dim()
        bad = [d for d in dims if d >= rank]
        if bad:
            raise UsageError(f"--dynamic {text!r}: input {name!r} has rank {rank}, so dims {bad} do not exist")
        for d, symbol in dims.items():  # repeated --dynamic flags for one input add up, but may not rename a dim
            first = named.setdefault((name, d), symbol)
            if first != symbol:
                raise UsageError(f"--dynamic: dim {d} of {name!r} is named both {first!r} and {symbol!r}; give it "
                                 "one name")  # fmt: skip
        specs.setdefault(name, {}).update(dims)
    sizes: dict[str, tuple[str, int]] = {}
    for name, dims in specs.items():
        tensor = tensors[names.index(name)]
        for d, symbol in dims.items():
            size = int(tensor.shape[d])
            if size < 2:
                raise UsageError(f"dynamic dim {d} ({symbol}) of {name!r} has example size {size}; torch.export "
                                 f"fixes sizes 0 and 1, so give --input {name} a size >= 2 there")  # fmt: skip
            first = sizes.setdefault(symbol, (name, size))
            if first[1] != size:
                raise UsageError(f"dim {symbol!r} is {first[1]} in {first[0]!r} but {size} in {name!r}; one symbolic "
                                 "name is one size: give the example inputs equal sizes or other names")  # fmt: skip
    if not specs:
        return tuple(tensors), None, names
    per_input = tuple(specs.get(n) or None for n in names)
    params = inspect.signature(loaded.module.forward).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in params):  # forward(*inputs) (builtin ops): one nested tuple
        return tuple(tensors), (per_input,), names
    return tuple(tensors), per_input, names
