"""The drill as a picture: one lane per node (alive, and each fault it took: notice, hard kill,
freeze), the control plane's restarts, records committed over time, and the recovery interval of
every fault (until each job its node held went on elsewhere). Written beside the JSON result.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.drill.observer import Preemption

COLORS = {"notice": "tab:orange", "hard": "tab:red", "freeze": "tab:purple"}


@dataclass
class Timeline:
    """What the drill saw, in monotonic seconds: records committed and nodes alive, sampled."""

    started: float = field(default_factory=time.monotonic)
    committed: list[tuple[float, int]] = field(default_factory=list)
    alive: dict[str, list[float]] = field(default_factory=dict)  # node -> the times it was seen
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self, committed: int, nodes: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.committed.append((now, committed))
            for node in nodes:
                self.alive.setdefault(node, []).append(now)

    def spans(self, node: str, gap_s: float = 10.0) -> list[tuple[float, float]]:
        """The intervals a node was seen alive (samples closer than `gap_s` join), from the start."""
        out: list[tuple[float, float]] = []
        for seen in sorted(self.alive.get(node, [])):
            t = seen - self.started
            if out and t - out[-1][1] <= gap_s:
                out[-1] = (out[-1][0], t)
            else:
                out.append((t, t))
        return out

    def render(self, path: Path, preemptions: list[Preemption], services: list[tuple[float, str]], title: str) -> Path:
        """Write the picture as PNG to `path`; `services` are the control plane's restarts (when, which)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (heavy import, only here)
        from matplotlib.figure import Figure  # noqa: PLC0415

        with self.lock:
            nodes = sorted(self.alive, key=lambda n: min(self.alive[n]))
            committed = list(self.committed)
        fig = Figure(figsize=(11, 2 + 0.35 * max(len(nodes), 1) + 2.5))
        FigureCanvasAgg(fig)
        lanes, work = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [max(len(nodes), 1), 4]})
        for lane, node in enumerate(nodes):
            spans = self.spans(node)
            lanes.broken_barh(
                [(a, max(b - a, 1.0)) for a, b in spans], (lane - 0.35, 0.7), color="tab:green", alpha=0.5
            )
        index = {node: lane for lane, node in enumerate(nodes)}
        for event in preemptions:
            at = event.at - self.started
            lane = index.get(event.node)
            if lane is not None:
                lanes.plot([at], [lane], marker="v", color=COLORS.get(event.mode, "black"), markersize=9)
            recovery = event.recovery_s
            if recovery is not None and recovery != float("inf"):
                work.axvspan(at, at + recovery, color=COLORS.get(event.mode, "grey"), alpha=0.15)
        for at, name in services:
            for ax in (lanes, work):
                ax.axvline(at - self.started, color="tab:blue" if "postgres" in name else "tab:brown", ls="--", lw=1)
        lanes.set_yticks(range(len(nodes)), nodes, fontsize=7)
        lanes.set_title(title, fontsize=9, loc="left")
        handles = [
            lanes.plot([], [], marker="v", ls="", color=color, label=mode)[0] for mode, color in COLORS.items()
        ] + [
            lanes.plot([], [], ls="--", color="tab:blue", label="PostgreSQL restart")[0],
            lanes.plot([], [], ls="--", color="tab:brown", label="Redis kill")[0],
        ]
        lanes.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=5, frameon=False)
        if committed:
            work.plot([t - self.started for t, _ in committed], [c for _, c in committed], color="black", lw=1)
        work.set_ylabel("records committed", fontsize=8)
        work.set_xlabel(
            "seconds since the flow run started (shaded: until the jobs of a node taken away went on)", fontsize=8
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        return path
