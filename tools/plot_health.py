"""Draw a run's health signals from its metrics.jsonl as one PNG (Pillow only, no plotting library).

    python tools/plot_health.py checkpoints/RUN --out docs/health.png [--samples 10,50,150]

One panel per signal (r_t and D's accuracies, diversity, memorisation, and FID when the run
tracked it), epochs along the x axis; with --samples, the run's sample grids of those epochs in a
row beneath, so that what the numbers say can be seen.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

PANEL_W, PANEL_H, MARGIN = 420, 180, 36
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
PANELS = [  # title, keys, fixed y range (None: from the data)
    ("D: r_t = E[sign D(real)], accuracy on real and fake", ("r_t", "d_acc_real", "d_acc_fake"),
     (-0.2, 1.0)),
    ("diversity (samples / training images)", ("diversity",), (0.0, 1.5)),
    ("memorisation (share of samples next to a training image)", ("memorisation",), (0.0, 1.0)),
    ("FID (EMA generator)", ("fid",), None),
]


def read(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def panel(records: list[dict], title: str, keys, y_range) -> Image.Image | None:
    series = {k: [(r["epoch"], r[k]) for r in records if k in r] for k in keys}
    if not any(series.values()):
        return None
    image = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    draw = ImageDraw.Draw(image)
    points = [p for s in series.values() for p in s]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1e-9)

    def at(x, y):
        return (MARGIN + (x - x0) / (x1 - x0) * (PANEL_W - 2 * MARGIN),
                PANEL_H - MARGIN - (y - y0) / (y1 - y0) * (PANEL_H - 2 * MARGIN))

    draw.rectangle([MARGIN, MARGIN, PANEL_W - MARGIN, PANEL_H - MARGIN], outline="#888888")
    draw.text((MARGIN, 8), title, fill="black")
    for label, value in ((f"{y1:.3g}", y1), (f"{y0:.3g}", y0)):
        draw.text((2, at(x0, value)[1] - 6), label, fill="#444444")
    draw.text((MARGIN, PANEL_H - MARGIN + 4), f"epoch {x0}", fill="#444444")
    draw.text((PANEL_W - MARGIN - 60, PANEL_H - MARGIN + 4), f"epoch {x1}", fill="#444444")
    for i, (key, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        if len(values) > 1:
            draw.line([at(x, y) for x, y in values], fill=colour, width=2)
    x = MARGIN
    for i, key in enumerate(series):  # the legend: one line between the title and the plot
        draw.text((x, 21), key, fill=COLOURS[i % len(COLOURS)])
        x += 8 * len(key) + 16
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", default="", help="epochs whose sample grids to show")
    args = parser.parse_args()
    records = [r for r in read(args.run) if r.get("kind") in ("epoch", "fid")]
    panels = [p for p in (panel(records, *spec) for spec in PANELS) if p is not None]
    grids = [Image.open(args.run / "samples" / f"fakes_epoch{int(e):05d}.png").convert("RGB")
             for e in args.samples.split(",") if e]
    columns = 2
    rows = -(-len(panels) // columns)
    grid_h = max((g.height for g in grids), default=0)
    sheet = Image.new("RGB", (columns * PANEL_W, rows * PANEL_H + grid_h + (20 if grids else 0)),
                      "white")
    for i, image in enumerate(panels):
        sheet.paste(image, ((i % columns) * PANEL_W, (i // columns) * PANEL_H))
    x = 0
    for epoch, grid in zip(args.samples.split(","), grids):
        ImageDraw.Draw(sheet).text((x + 4, rows * PANEL_H + 4), f"samples, epoch {epoch}",
                                   fill="black")
        sheet.paste(grid, (x, rows * PANEL_H + 20))
        x += grid.width + 8
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
