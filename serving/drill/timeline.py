"""The drill's timeline as a PNG: per scenario, answers per second by cloud (stacked, failures on top)
and latency percentiles, with the fault window shaded and labelled, and the steps of a longer schedule
(e.g. storage down, promote, storage up, re-publish) marked.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from serving.drill.load import RequestRecord
from serving.drill.report import ScenarioReport

__all__ = ["write_timeline"]

# Half a second shows a failover's dip without the noise of single requests at a few hundred per second.
BIN_SECONDS = 0.5
# Failures are always red; answers take the other Tableau colours.
FAILED_COLOUR = "tab:red"
ANSWER_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:gray")
# What fits above an 11-inch-wide plot in the default font.
TITLE_CHARACTERS = 110
FAILED = "failed"


def write_timeline(runs: Sequence[tuple[ScenarioReport, Sequence[RequestRecord]]], path: Path) -> Path:
    """Draw every scenario's timeline into one PNG at `path`."""
    figure = Figure(figsize=(11, 4.2 * len(runs)), layout="constrained")
    axes = figure.subplots(2 * len(runs), 1, squeeze=False)[:, 0]
    for index, (report, records) in enumerate(runs):
        _draw(report, records, axes[2 * index], axes[2 * index + 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _draw(report: ScenarioReport, records: Sequence[RequestRecord], rate: Axes, latency: Axes) -> None:
    end = max([report.duration_seconds, *(record.sent_at for record in records)])
    edges = np.arange(0.0, end + BIN_SECONDS, BIN_SECONDS)
    centres = edges[:-1]
    # After a promotion, which version each cloud answered with is the story: a series per cloud and version.
    versions = len({record.model_version for record in records if record.ok}) > 1
    answered = [record for record in records if record.ok]
    groups: dict[str, list[float]] = {}
    for record in sorted(answered, key=lambda record: (record.routed_to or "?", record.model_version or "?")):
        name = (record.routed_to or "?") + (f" v{record.model_version}" if versions else "")
        groups.setdefault(name, []).append(record.sent_at)
    groups[FAILED] = [record.sent_at for record in records if not record.ok]
    series = [np.histogram(times, bins=edges)[0] / BIN_SECONDS for times in groups.values()]
    colours = [ANSWER_COLOURS[index % len(ANSWER_COLOURS)] for index in range(len(groups) - 1)] + [FAILED_COLOUR]
    rate.stackplot(centres, *series, labels=list(groups), colors=colours, step="post")
    rate.set_ylabel("requests/s")
    rate.set_title(textwrap.shorten(f"{report.scenario}: {report.description}", TITLE_CHARACTERS))
    rate.legend(loc="upper right", fontsize="small")

    index = np.digitize([record.sent_at for record in records], edges) - 1
    seconds = np.asarray([record.seconds * 1000 for record in records])
    for percentile in (50, 95, 99):
        values = [
            float(np.percentile(seconds[index == bin_index], percentile)) if np.any(index == bin_index) else np.nan
            for bin_index in range(len(centres))
        ]
        latency.plot(centres, values, label=f"p{percentile}")
    latency.set_yscale("log")
    # Plain numbers ("2", "500") rather than powers of ten, on the major and minor ticks alike.
    latency.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    latency.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel("seconds since the start of the scenario")
    latency.legend(loc="upper right", fontsize="small")

    start, stop = report.fault_window_seconds
    label = f"fault: {', '.join(report.faulted)}"
    for axis in (rate, latency):
        axis.axvspan(start, stop, color="tab:red", alpha=0.15, zorder=3)
        axis.set_xlim(0, end)
    rate.annotate(
        label,
        xy=(start, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, -3),
        textcoords="offset points",
        va="top",
        fontsize="small",
        zorder=4,
    )
    if len(report.events) > 1:  # a schedule of several steps: mark each one
        for event in report.events:
            rate.axvline(event.at, color="tab:red", linewidth=0.8, linestyle=":", zorder=4)
            rate.annotate(
                event.verb,
                xy=(event.at, 0.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, 3),
                textcoords="offset points",
                rotation=90,
                fontsize="x-small",
                zorder=4,
            )
