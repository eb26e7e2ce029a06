"""The export traps real models walk into, caught before a silently wrong file is written.

- **Wrappers.** ``nn.DataParallel``, ``DistributedDataParallel`` and ``torch.compile``'s ``OptimizedModule``
  forward to the module they hold, but exported as they are they gave files that disagreed with eager
  PyTorch (measured: 0.34 off through ``DataParallel``), or torch's cryptic "inputs[0] is a tuple" with
  dynamic shapes. kpx exports the module inside and says so.
- **Meta tensors.** A model built on the ``meta`` device (no storage yet) is refused with the fix.
- **A heatmap size that goes stale.** ``HeatmapToImage`` maps keypoints through a *fixed* ``heatmap_size``;
  when the heatmaps it decodes have a *dynamic* size (the model was exported with dynamic input H/W),
  every size but the example's would be mapped wrong. Such an export is refused.
- **Generic output names.** torch names the outputs of tuple-returning ops ``getitem_6``; a graph output
  that is a kpx op's output is named after it (``keypoints``, ``scores``, made unique) unless the caller
  named the outputs.
"""

from __future__ import annotations

from typing import Any

import torch

from export_tools.errors import ExportError

#: kpx ops whose first output is coordinates in the pixels of their first input's last two dims
_HEATMAP_PIXEL_SOURCES = ("DecodeHeatmaps", "SpatialSoftArgmax2d", "SpatialExpectation2d")


def unwrap_model(model: torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
    """The module a wrapper holds, and a note saying so (``None`` when ``model`` is no wrapper)."""
    inner, seen = model, []
    while True:
        if isinstance(inner, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            seen.append(type(inner).__name__)
            inner = inner.module
        elif hasattr(inner, "_orig_mod") and isinstance(inner._orig_mod, torch.nn.Module):  # torch.compile
            seen.append("torch.compile")
            inner = inner._orig_mod
        else:
            break
    if not seen:
        return model, None
    return inner, f"exporting the {type(inner).__name__} inside {' inside '.join(seen)} (wrappers are not exported)"


def check_materialised(model: torch.nn.Module) -> None:
    """Refuses a model whose parameters or buffers are on the ``meta`` device (no values to export)."""
    meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        raise ValueError(
            f"the model has {len(meta)} parameter(s) or buffer(s) on the meta device (e.g. {meta[0]!r}), which "
            "hold no values; materialise it first: model.to_empty(device='cpu') then load_state_dict(...), or "
            "build it without device='meta'"
        )


def _dims(values: dict[str, Any], name: str) -> list[int | str]:
    value = values.get(name)
    if value is None or not value.type.HasField("tensor_type"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def check_heatmap_sizes(proto) -> None:
    """Refuses a ``HeatmapToImage`` whose fixed ``heatmap_size`` would go stale (see the module docstring)."""
    from custom_ops.registry import DOMAIN

    graph = proto.graph
    producers = {out: node for node in graph.node for out in node.output}
    values = {v.name: v for v in (*graph.value_info, *graph.input, *graph.output)}
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type != "HeatmapToImage":
            continue
        size = next((list(a.ints) for a in node.attribute if a.name == "heatmap_size"), None)
        pending, seen = [node.input[0]], set()
        while pending:  # everything the keypoints are computed from, back to the kpx ops that made them
            name = pending.pop()
            if name in seen or name not in producers:
                continue
            seen.add(name)
            source = producers[name]
            if source.domain == DOMAIN and source.op_type in _HEATMAP_PIXEL_SOURCES:
                dims = _dims(values, source.input[0])[-2:]
                if any(isinstance(d, str) for d in dims):
                    raise ExportError(
                        f"HeatmapToImage maps keypoints through a fixed heatmap_size {tuple(size or ())}, but the "
                        f"maps its keypoints come from ({source.op_type}) have a dynamic size {tuple(dims)}: at "
                        "any other input size the mapping would be wrong. Keep the input's H and W static (make "
                        "only the batch dynamic), or export one file per input size"
                    )
                continue  # the maps themselves are not keypoints: do not search behind them
            pending.extend(source.input)
