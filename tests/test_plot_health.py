"""tools/plot_health.py draws a run's health signals and sample grids into one PNG."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_plot_has_a_panel_per_signal_and_the_sample_grids(tmp_path):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    records = [{"kind": "epoch", "epoch": e, "r_t": 0.3, "d_acc_real": 0.6, "d_acc_fake": 0.7,
                "diversity": 0.5 + e / 20, "memorisation": 0.0} for e in range(1, 11)]
    records.append({"kind": "step", "step": 3, "epoch": 1, "r_t": 5.0})  # not plotted
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n", encoding="utf-8")
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(run / "samples" / "fakes_epoch00010.png")
    out = tmp_path / "health.png"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "plot_health.py"), str(run),
                           "--out", str(out), "--samples", "10"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sheet = Image.open(out)
    # three panels (no FID recorded) in two columns of 420 x 180, then the grid under a caption
    assert sheet.size == (840, 2 * 180 + 20 + 40)
    pixels = np.asarray(sheet.convert("RGB"))
    assert (pixels[2 * 180 + 20:, :60] == 200).all()  # the sample grid, pasted as it was
    assert (pixels[:180, :420] != 255).any() and (pixels[180:360, 420:] == 255).all()
