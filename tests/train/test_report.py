"""The run report: labelled plots that fit the page, rounded numbers, what the user set."""

from __future__ import annotations

from pathlib import Path

from finetuning.train.reporting.report import figure, write_report
from finetuning.train.reporting.summary import RunSummary


def _history(dpo: bool) -> list[dict]:
    history = []
    for step in range(1, 6):
        entry = {"step": step, "loss": 1 / step + 0.000123456789, "learning_rate": 1e-3}
        entry["tokens_per_second"] = 500.0 + step
        if dpo:
            entry["rewards/margins"] = 0.1 * step
            entry["rewards/accuracies"] = 0.5
        history.append(entry)
    return history


def _summary(dpo: bool) -> RunSummary:
    history = _history(dpo)
    return RunSummary(
        steps=5, seconds=12.34, tokens=1000, tokens_per_second=81.03, eval_loss=None,
        train_loss=0.32775449752807617, final_dir=Path("/out/checkpoint-final"), history=history,
        rewards={"rewards/margins": 0.512345678} if dpo else {},
    )  # fmt: skip


def test_dpo_figure_fits_the_page_with_labels_and_integer_step_ticks():
    import matplotlib.pyplot as plt

    fig = figure(_history(dpo=True))
    try:
        width = fig.get_size_inches()[0] * 100
        assert width <= 1000 and len(fig.axes) == 4
        for ax in fig.axes:
            assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel()
            ax.set_xlim(0.5, 3.7)  # a short run: only whole steps are ticked
            fig.canvas.draw()
            ticks = [t for t in ax.get_xticks() if 0.5 <= t <= 3.7]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)


def test_report_rounds_omits_absent_values_and_separates_user_settings(tmp_path):
    summary = _summary(dpo=True)
    full = {"method": "dpo", "training_args": {"adam_beta1": 0.9, "learning_rate": 5e-4}}
    write_report(
        tmp_path, summary, full, ["training rows: 10"],
        user_settings={"training_args.learning_rate": 5e-4},
        engine_resolved={"per-device train batch": 4, "resumed from": None},
    )  # fmt: skip
    page = (tmp_path / "run_report.html").read_text()
    summary_table = page.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    assert "0.3278" in summary_table and "0.32775" not in summary_table
    assert "None" not in summary_table and "final eval loss" not in summary_table
    assert "0.5123" in summary_table
    config = page.split("<h2>Config</h2>", 1)[1]
    user, rest = config.split("<h3>Resolved by the engine</h3>", 1)
    assert "training_args.learning_rate" in user and "adam_beta1" not in user
    assert "per-device train batch" in rest and "resumed from" not in rest
    # Every default stays available, collapsed.
    assert "<details><summary>Resolved config" in rest and "adam_beta1: 0.9" in rest
    assert "max-width:100%" in page


def test_preference_methods_get_their_own_panels():
    import matplotlib.pyplot as plt

    history = [
        {"step": s, "loss": 0.5 - s / 100, "learning_rate": 1e-3, "tokens_per_second": 100.0,
         "rewards/margins": s / 10, "kl": s / 5, "log_odds_ratio": -0.6 + s / 50}
        for s in (1, 2, 3)
    ]  # fmt: skip
    fig = figure(history)
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
        assert titles[3:] == ["preference rewards", "KTO KL estimate", "ORPO log-odds"]
        assert fig.get_size_inches()[0] * 100 <= 1000
    finally:
        plt.close(fig)
    without = figure([{k: v for k, v in h.items() if k != "kl"} for h in history])
    try:
        assert "KTO KL estimate" not in [ax.get_title() for ax in without.axes]
    finally:
        plt.close(without)


def test_summary_line_names_the_methods_own_metrics():
    from finetuning.train.reporting.summary import RunSummary

    summary = RunSummary(
        steps=1, seconds=1.0, tokens=1, tokens_per_second=1.0, train_loss=0.5, eval_loss=None,
        final_dir=Path("/out"), rewards={"rewards/margins": 0.25, "kl": 1.5},
    )  # fmt: skip
    assert "rewards: margin 0.2500, kl 1.5000" in summary.format()  # KTO: no accuracy
