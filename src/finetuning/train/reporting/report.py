"""The run report: ``loss.png`` and a self-contained ``run_report.html`` next to the checkpoints.

One file that tells whether a run went well: the loss and eval-loss curves, the learning rate,
throughput, the preference rewards and the method's own curves (KTO's KL, ORPO's log-odds; GRPO's
rewards, KL and completion lengths) when there are any, the summary, the data preflight and the
resolved config.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import yaml

from finetuning.train.reporting.summary import RunSummary


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key``; a step that logged no number for it (None: e.g. GRPO's mean
    of a reward that returned None for every completion) is left out of the curve."""
    points = [
        (h["step"], h[key])
        for h in history
        if "step" in h and isinstance(h.get(key), int | float) and not isinstance(h.get(key), bool)
    ]
    return [p[0] for p in points], [float(p[1]) for p in points]


#: (title, y-axis label, series) of each panel.
PANELS = [
    ("loss", "loss", ["loss", "eval_loss"]),
    ("learning rate", "learning rate", ["learning_rate"]),
    ("throughput", "tokens/s", ["tokens_per_second"]),
]
DPO_PANEL = (
    "preference rewards",
    "reward margin / accuracy",
    ["rewards/margins", "rewards/accuracies", "eval_rewards/margins"],
)
#: The preference methods' own curves, each shown when its first key was logged.
METHOD_PANELS = [
    ("KTO KL estimate", "KL", ["kl", "eval_kl"]),
    ("ORPO log-odds", "log odds", ["log_odds_ratio", "log_odds_chosen", "eval_log_odds_ratio"]),
]


GRPO_PANEL = (
    "GRPO rewards",
    "reward / KL",
    ["reward", "reward_std", "kl"],
)
GRPO_LENGTH_PANEL = ("GRPO completions", "tokens", ["completions/mean_length"])


def _grpo_panels(history: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """The GRPO panels: total reward, its std and KL with each function's mean; lengths."""
    if not any("reward" in h for h in history):
        return []
    functions = sorted(
        {k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")}
    )
    title, ylabel, keys = GRPO_PANEL
    return [(title, ylabel, [*keys, *functions]), GRPO_LENGTH_PANEL]


REWARD_PANEL = (
    "reward model",
    "score margin / accuracy",
    ["margin", "accuracy", "eval_margin", "eval_accuracy"],
)


def eval_panels(history: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """One curve per validation source, and one per generation-eval metric (when logged)."""
    keys = sorted({k for h in history for k in h if k.startswith("eval_")})
    generation = {k[: -len("_score")] for k in keys if k.endswith("_score")}
    sources = [
        k
        for k in keys
        if k.endswith("_loss") and k != "eval_loss" and not k.startswith(tuple(generation))
    ]
    metrics = [k for k in keys if k.startswith(tuple(generation)) and k.split("_")[-1] != "runtime"]
    out = []
    if sources:
        out.append(("validation loss by source", "loss", ["eval_loss", *sources]))
    if metrics:
        out.append(("generation evals", "mean metric", metrics))
    return out


def plot(history: list[dict[str, Any]], path: Path) -> None:
    """Write the curves (loss and eval loss; learning rate; tokens/s; DPO margins) as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(history)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure(history: list[dict[str, Any]]) -> Any:
    """The matplotlib figure of the curves, with labelled axes and whole-number step ticks.

    Three panels side by side, or a grid of two rows with the preference rewards and the
    method's own curves (KTO's KL, ORPO's log-odds), so the image stays 1000 px wide at 100 dpi
    (the report shows it at the page width).
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
    grpo = _grpo_panels(history)  # GRPO's panel has its KL: no second one from METHOD_PANELS
    panels += grpo or [p for p in METHOD_PANELS if any(p[2][0] in h for h in history)]
    panels += eval_panels(history)
    rows = 1 if len(panels) <= 3 else 2
    cols = -(-len(panels) // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)  # an odd number of panels leaves one cell empty
    for ax, (title, ylabel, keys) in zip(axes.flat, panels, strict=False):
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


def _completions_section(path: Path, per_step: int = 2, steps: int = 5) -> str:
    """GRPO: sampled completions with their rewards at the first and the last logged steps."""
    if not path.is_file():
        return ""
    import json

    by_step: dict[int, list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a stopped run
        by_step.setdefault(int(entry.get("step", 0)), []).append(entry)
    chosen = sorted(by_step)
    chosen = (
        chosen
        if len(chosen) <= steps
        else [*chosen[: steps // 2], *chosen[-(steps - steps // 2) :]]
    )
    rows = []
    for step in chosen:
        for entry in by_step[step][:per_step]:
            rewards = ", ".join(f"{k} {_number(v)}" for k, v in entry.get("rewards", {}).items())
            rows.append(
                f"<tr><td>{step}</td><td><pre>{html.escape(str(entry.get('completion', '')))}</pre>"
                f"</td><td>{html.escape(_number(entry.get('reward')))}</td>"
                f"<td>{html.escape(rewards)}</td></tr>"
            )
    return (
        "<h2>Sampled completions</h2><p>from completions.jsonl (all of them are there)</p>"
        "<table><tr><th>step</th><th>completion</th><th>reward</th><th>per function</th></tr>"
        + "".join(rows)
        + "</table>"
    )


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
            *getattr(summary, "evaluations", {}).items(),
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
    samples = _completions_section(output_dir / "completions.jsonl")
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
{samples}<h2>Data</h2><pre>{html.escape(chr(10).join(preflight_lines))}</pre>
<h2>Config</h2>{settings}
<details><summary>Resolved config (every default filled in)</summary>
<pre>{html.escape(buffer.getvalue())}</pre></details>
</body></html>
"""
    report = output_dir / "run_report.html"
    report.write_text(page, encoding="utf-8")
    return [png, report]
