"""The HTML report as a reader sees it: rendered by headless Chromium, then looked at.

The page of a real ramped run (against a capped responder, so there is a knee, timeouts and a
mix of status codes) is screenshotted; the test checks the image is not blank, that the
charts' series colours are on it (the capacity curve's goodput green and P99 vermilion, the
status bars), and reads the rendered DOM for the tables' headings.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import numpy as np
from matplotlib import image

from loadtest.engine import Engine, EngineConfig
from loadtest.report import build_report
from loadtest.reporthtml import GREEN, RED, render_html
from loadtest.responder import Responder
from loadtest.synth import SynthParams, synthesize
from loadtest.thresholds import evaluate, parse_threshold

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or CHROMIUM
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) / 255.0 for i in (1, 3, 5)])


def _near(img: np.ndarray, hex_colour: str, tol: float = 0.08) -> np.ndarray:
    near: np.ndarray = np.all(np.abs(img[:, :, :3] - _rgb(hex_colour)) < tol, axis=2)
    return near


async def _run_page(tmp: Path) -> Path:
    loop = asyncio.get_running_loop()
    capped = Responder(max_rate=300)
    tr, _ = await loop.create_datagram_endpoint(lambda: capped, local_addr=("127.0.0.1", 0))
    port = tr.get_extra_info("sockname")[1]
    _, events = synthesize("steady", SynthParams(kind="register", rate=900, duration=3,
                                                  users=400))
    try:
        res = await Engine(events, EngineConfig(
            target=("127.0.0.1", port), ramp_up=6, duration=6, drain=0.5, t1=0.05,
            deadline=0.2, sockets=8)).run()
    finally:
        tr.close()
    rep = build_report(res, {"path": "t.jsonl", "source": "synth steady", "events": 2700,
                             "domains": ["127.0.0.1"]},
                       {"target": f"udp://127.0.0.1:{port}", "speed": 1.0, "ramp_up": 6})
    # One threshold met, one not: the verdict is FAILED and both rows show.
    rep.thresholds = evaluate(rep, [parse_threshold("sent>0"), parse_threshold("sent<0")])
    page = tmp / "run.html"
    page.write_text(render_html(rep))
    return page


async def test_the_report_renders_with_curve_and_tables_in_chromium(tmp_path: Path) -> None:
    page = await _run_page(tmp_path)
    shot = tmp_path / "shot.png"
    r = await asyncio.to_thread(_chromium, tmp_path, f"--screenshot={shot}",
                                "--window-size=1400,3000", page.as_uri())
    assert shot.exists(), r.stderr[-2000:]
    img = image.imread(str(shot))
    assert img.shape[0] == 3000 and img.shape[1] == 1400
    # Not blank: a good share of the page is ink, not background.
    ink = np.any(img[:, :, :3] < 0.9, axis=2)
    assert ink.mean() > 0.05
    # The capacity curve and the other series: goodput green and P99 vermilion lines, drawn
    # across many rows of pixels (curves, not a single cell of a table).
    for colour in (GREEN, RED):
        mask = _near(img, colour)
        assert mask.sum() > 500, colour
        assert np.count_nonzero(mask.any(axis=1)) > 100, colour
    # The rendered document has real tables with headings, and the capacity chart.
    dom = await asyncio.to_thread(_chromium, tmp_path, "--dump-dom", page.as_uri())
    html = dom.stdout
    for heading in ("<th>sent</th>", "<th>P99 ms</th>", "<th>offered/s</th>",
                    "<th class=\"l\">threshold</th>", "Capacity curve", "Knee</b>",
                    "Final answers by status code"):
        assert heading in html, heading
    assert "FAILED: 1 of 2 thresholds not met" in html
    assert "{'" not in html  # no Python dict printed raw
