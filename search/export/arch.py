"""Exporting a trial of a table search (data ``table:PATH``): its candidates were looked up, never
trained, so what there is to export is the architecture string and the metrics the table gave it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compactnas.search.export.base import ExportError
from compactnas.search.export.dest import ExportResult, prepare_dest
from compactnas.search.export.registry import FORMATS, file_name
from compactnas.spaces.nb201 import to_nb201_string


def export_table_trial(
    out: Path, number: int, frozen: Any, cfg: Any, summary: dict[str, Any]
) -> Any:

    arch = str(frozen.user_attrs.get("arch"))
    weighted = [f for f in cfg.formats if FORMATS[f].needs_weights]
    if weighted:
        raise ExportError(
            f"a table search trains no weights, so it cannot export {', '.join(weighted)}: "
            "export its architecture with --format arch (train it with create_model first)"
        )
    dest = (
        Path(cfg.dest).expanduser().resolve() if cfg.dest else out / "exports" / f"trial_{number}"
    )
    prepare_dest(dest, number, arch, cfg.formats, cfg.force)
    path = dest / file_name("arch", number)
    path.write_text(arch + "\n")
    card: dict[str, Any] = {
        "trial": number,
        "arch": arch,
        "source": {"search": str(out), "trial": number, "weights": "none (table lookup)"},
        "data": {"source": summary.get("config", {}).get("data")},
        "metrics": frozen.user_attrs.get("metrics", {}),
        "warnings": [],
    }
    try:
        card["nb201"] = to_nb201_string(arch)
    except ValueError:
        pass
    (dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    lines = [f"# Model card: trial {number}", "", f"Architecture: `{arch}`", ""]
    if "nb201" in card:
        lines += [f"NAS-Bench-201 notation: `{card['nb201']}`", ""]
    lines += [f"Looked up in `{card['data']['source']}` (not trained):", ""]
    lines += [f"- {k}: {v:g}" for k, v in sorted(card["metrics"].items())]
    (dest / "card.md").write_text("\n".join(lines) + "\n")
    return ExportResult(dest=dest, trial=number, arch=arch, files={"arch": path}, card=card)
