"""The run report: ``loss.png`` and a self-contained ``run_report.html`` next to the checkpoints.

One file that tells whether a run went well: the loss and eval-loss curves, the learning rate,
throughput, DPO rewards when there are any, the summary, the data preflight and the resolved config.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import yaml

from finetuning.train.summary import RunSummary


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(h["step"], h[key]) for h in history if key in h and "step" in h]
    return [p[0] for p in points], [float(p[1]) for p in points]


#: (title, y-axis label, series) of each panel.
PANELS = [
    ("loss", "loss", ["loss", "eval_loss"]),
    ("learning rate", "learning rate", ["learning_rate"]),
    ("throughput", "tokens/s", ["tokens_per_second"]),
]
DPO_PANEL = (
    "DPO rewards",
    "reward margin / accuracy",
    ["rewards/margins", "rewards/accuracies", "eval_rewards/margins"],
)


REWARD_PANEL = (
    "reward model",
    "score margin / accuracy",
    ["margin", "accuracy", "eval_margin", "eval_accuracy"],
)


def plot(history: list[dict[str, Any]], path: Path) -> None:
    """Write the curves (loss and eval loss; learning rate; tokens/s; DPO margins) as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(history)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure(history: list[dict[str, Any]]) -> Any:
    """The matplotlib figure of the curves, with labelled axes and whole-number step ticks.

    Three panels side by side, or a 2 x 2 grid with the DPO rewards, so the image stays
    1000 px wide at 100 dpi (the report shows it at the page width).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = list(PANELS)
    if any("rewards/margins" in h for h in history):
        panels.append(DPO_PANEL)
    elif any("margin" in h for h in history):
        panels.append(REWARD_PANEL)
    rows, cols = (2, 2) if len(panels) == 4 else (1, len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.4 * rows), squeeze=False)
    for ax, (title, ylabel, keys) in zip(axes.flat, panels, strict=True):
        for key in keys:
            steps, values = _series(history, key)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _number(value: Any) -> str:
    """Numbers as people read them: 4 decimals for small floats, none for large ones."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_number(v))}</td></tr>"
        for k, v in pairs
        if v is not None
    )


def _verdict(summary: RunSummary) -> str:
    _, losses = _series(summary.history, "loss")
    if len(losses) < 2:
        return "too few logged steps to judge the loss curve"
    if any(v != v or v in (float("inf"), float("-inf")) for v in losses):
        return "the loss became non-finite"
    change = losses[-1] - losses[0]
    trend = "fell" if change < 0 else "did not fall"
    return f"training loss {trend}: {losses[0]:.4f} → {losses[-1]:.4f}"


def write_report(
    output_dir: Path,
    summary: RunSummary,
    config_data: dict[str, Any],
    preflight_lines: list[str],
    user_settings: dict[str, Any] | None = None,
    engine_resolved: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``loss.png`` and ``run_report.html`` into ``output_dir``; returns their paths.

    Args:
        output_dir: Where the run's outputs are.
        summary: What the run did.
        config_data: The fully resolved config (every default), shown collapsed.
        preflight_lines: The data preflight report.
        user_settings: The settings the config file set (flattened ``a.b.c`` keys).
        engine_resolved: What the engine derived (batch sizes, learning rate, outputs, ...).
    """
    png = output_dir / "loss.png"
    plot(summary.history, png)
    image = base64.b64encode(png.read_bytes()).decode()
    rows = _rows(
        [
            ("steps", summary.steps),
            ("time", f"{summary.seconds:.1f} s"),
            ("tokens", summary.tokens),
            ("tokens/s", f"{summary.tokens_per_second:.0f}"),
            ("final train loss", summary.train_loss),
            ("final eval loss", summary.eval_loss),
            *summary.rewards.items(),
            ("outputs", summary.final_dir),
        ]
    )
    buffer = io.StringIO()
    yaml.safe_dump(config_data, buffer, sort_keys=False)
    settings = ""
    if user_settings:
        settings += (
            f"<h3>Set in the config</h3><table>{_rows(sorted(user_settings.items()))}</table>"
        )
    if engine_resolved:
        settings += (
            f"<h3>Resolved by the engine</h3><table>{_rows(list(engine_resolved.items()))}</table>"
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>finetuning run report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
img{{max-width:100%;height:auto}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>finetuning run report ({html.escape(str(config_data.get("method", "")))})</h1>
<p><b>{html.escape(_verdict(summary))}</b></p>
<img alt="training curves" src="data:image/png;base64,{image}">
<h2>Summary</h2><table>{rows}</table>
<h2>Data</h2><pre>{html.escape(chr(10).join(preflight_lines))}</pre>
<h2>Config</h2>{settings}
<details><summary>Resolved config (every default filled in)</summary>
<pre>{html.escape(buffer.getvalue())}</pre></details>
</body></html>
"""
    report = output_dir / "run_report.html"
    report.write_text(page, encoding="utf-8")
    return [png, report]
