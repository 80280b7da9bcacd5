"""build_report on a small synthetic evaluation folder (and on the real gorkha files, slow)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from typer.testing import CliRunner

from landslide_hazard.cli import app
from landslide_hazard.evaluation import MapFiles, evaluate_files
from landslide_hazard.io import RasterError, write_raster
from landslide_hazard.report import build_report, figures, load_report_inputs
from landslide_hazard.report.build import block_mean, cards, viewer_payload
from landslide_hazard.report.cartography import colorbar_ticks, map_extent_km, nice_scale_length
from landslide_hazard.report.figures import confusion_classes

REPO_ROOT = Path(__file__).resolve().parents[2]
GORKHA = REPO_ROOT.parent / "shared" / "data" / "gorkha2015"
NAMES = ["Co-seismic", "Post-monsoon 1", "Pre-monsoon 2"]
TRANSFORM = Affine(1000.0, 0, 300000.0, 0, -1000.0, 3100000.0)


def _synthetic_folder(tmp_path: Path, with_folds: bool = True, names=NAMES) -> Path:
    rng = np.random.default_rng(7)
    shape = (3, 18, 24)
    latent = rng.random(shape)
    observed = np.where(latent > 0.75, rng.gamma(0.6, 1.5, shape), 0.0)
    sus = np.clip(latent + rng.normal(0, 0.2, shape), 0, 1)
    dens = np.clip(observed * 0.7 + rng.gamma(0.5, 0.4, shape), 0, None)
    observed[:, :3, :4] = np.nan
    maps = tmp_path / "maps"
    paths = {
        k: write_raster(maps / f"{k}.tif", a, TRANSFORM, "EPSG:32645", names)
        for k, a in {"observed": observed, "susceptibility": sus, "density": dens}.items()
    }
    if with_folds:
        folds = np.zeros(shape[1:])
        folds[:, 12:] = 1
        paths["folds"] = write_raster(maps / "folds.tif", folds, TRANSFORM, "EPSG:32645")
    out = tmp_path / "ev"
    evaluate_files(MapFiles(**paths), out_dir=out, show_table=False)
    return out


def _assert_self_contained(text: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<link" not in text.lower() and "@import" not in text
    assert not re.search(r"<script[^>]+src=", text, re.I)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One report for the module, built through the CLI (building takes a few seconds)."""
    folder = _synthetic_folder(tmp_path_factory.mktemp("report"))
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    return folder / "report.html"


def test_report_builds_self_contained(built):
    text = built.read_text()
    _assert_self_contained(text)
    for section in (
        "summary",
        "viewer",
        "maps",
        "confusion",
        "residuals",
        "curves",
        "scatter",
        "bars",
        "table",
        "limits",
    ):
        assert f'id="{section}"' in text
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(pngs) >= 10
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "climate" in text and "fold 1" in text
    payload = json.loads(
        re.search(
            r'<script type="application/json" id="viewer-data">(.*?)</script>', text, re.S
        ).group(1)
    )
    assert payload["periods"] == NAMES
    assert set(payload["layers"]) >= {
        "hazard",
        "susceptibility",
        "density",
        "observed",
        "residual",
        "confusion",
    }


def test_viewer_payload_round_trips_values(tmp_path):
    data = load_report_inputs(_synthetic_folder(tmp_path, with_folds=False))
    payload = viewer_payload(data)
    h, w = payload["grid"]["height"], payload["grid"]["width"]
    mask = np.unpackbits(
        np.frombuffer(base64.b64decode(payload["mask"]), "uint8"), bitorder="little"
    )[: h * w].astype(bool)
    # the viewer shows every cell that any layer covers (predictions also where unmapped)
    union = np.zeros(data.observed.shape[1:], dtype=bool)
    for layer in (data.observed, data.susceptibility, data.density):
        union |= np.isfinite(layer).any(axis=0)
    np.testing.assert_array_equal(mask, union.ravel())
    observed = np.frombuffer(base64.b64decode(payload["layers"]["observed"]["periods"][0]), "<f2")
    assert np.isnan(observed).sum() == np.isnan(data.observed[0].ravel()[mask]).sum() == 12
    decoded = np.frombuffer(base64.b64decode(payload["layers"]["density"]["periods"][1]), "<f2")
    np.testing.assert_allclose(decoded, data.density[1].ravel()[mask], rtol=1e-3, atol=1e-4)
    small = viewer_payload(data, max_cells=100)  # 18 x 24 cells -> 3 x 3 blocks
    assert small["grid"]["factor"] == 3 and small["grid"]["transform"][0] == 3000.0


def test_block_mean_and_helpers():
    a = np.arange(16, dtype=float).reshape(1, 4, 4)
    a[0, 0, 0] = np.nan
    m = block_mean(a, 2)
    assert m.shape == (1, 2, 2)
    assert m[0, 0, 0] == pytest.approx((1 + 4 + 5) / 3) and m[0, 1, 1] == pytest.approx(12.5)
    assert block_mean(np.full((1, 3, 3), np.nan), 2).shape == (1, 2, 2)
    assert nice_scale_length(220) == 20 and nice_scale_length(9) == 1
    assert map_extent_km(tuple(TRANSFORM)[:6], (10, 20)) == (300.0, 320.0, 3090.0, 3100.0)
    obs = np.array([0.0, 1.0, 0.0, 2.0, np.nan])
    sus = np.array([0.1, 0.9, 0.8, 0.2, 0.5])
    np.testing.assert_array_equal(confusion_classes(obs, sus, 0.5), [0, 3, 1, 2, np.nan])


def test_report_errors_name_the_fix(tmp_path):
    with pytest.raises(RasterError, match="metrics.json: not found"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"inputs": {"observed": "o.tif"}}))
    with pytest.raises(RasterError, match="no susceptibility"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text(
        json.dumps({"inputs": {"observed": "o.tif", "susceptibility": "s.tif"}})
    )
    with pytest.raises(RasterError, match="inputs.observed = o.tif not found"):
        build_report(tmp_path)


def test_run_folder_without_evaluation_metrics(tmp_path):
    """A run folder: maps in RUN/maps, metrics.json with held-out scores but no inputs."""
    folder = _synthetic_folder(tmp_path, with_folds=False)
    ev = json.loads((folder / "metrics.json").read_text())
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "maps", run / "maps")
    held_out = {**ev, "pooled": {**ev["pooled"]}}
    held_out["pooled"]["occurrence"] = {**ev["pooled"]["occurrence"], "auc": 0.777}
    run_metrics = {
        "protocol": "spatial",
        "fold": 1,
        "threshold": 0.5,
        "model": held_out,
        "oracle_auc": 0.9,
        "skill_pooled": 0.69,
    }
    (run / "metrics.json").write_text(json.dumps(run_metrics))
    data = load_report_inputs(run)
    assert "computed by the report" in data.metrics_source and data.threshold == 0.5
    assert data.paths["observed"] == str((run / "maps" / "observed.tif").resolve())
    assert data.metrics["pooled"]["occurrence"]["auc"] == pytest.approx(
        ev["pooled"]["occurrence"]["auc"]
    )
    assert data.hazard_source == "susceptibility x density"
    np.testing.assert_allclose(data.hazard, data.susceptibility * data.density)
    html_cards = cards(data.metrics)
    assert "Held out: the run&#x27;s test cells (protocol spatial, test fold 1)" in html_cards
    assert "0.777" in html_cards and "0.690" in html_cards  # held-out AUC and skill
    (run / "maps" / "susceptibility.tif").unlink()
    with pytest.raises(RasterError, match="holds no susceptibility.tif"):
        load_report_inputs(run)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI (.ci/run) installs chromium and sets this: there the browser tests must run, not skip.
REQUIRE_BROWSER = os.environ.get("LANDSLIDE_HAZARD_REQUIRE_BROWSER") == "1"


def _need_chromium() -> None:
    if CHROMIUM is not None:
        return
    if REQUIRE_BROWSER:
        pytest.fail("LANDSLIDE_HAZARD_REQUIRE_BROWSER=1 but no chromium on PATH")
    pytest.skip("chromium not installed (apt-get install chromium); CI installs it")


# Drives the viewer like a user: pick a layer, pick a period, hover to read a cell, step the
# period, zoom, click to pin; then counts the colours the map canvas shows.
_INTERACT = """<script>
(function () {
  var c = document.getElementById("viewer-canvas"), r = c.getBoundingClientRect();
  var x = r.left + r.width / 2, y = r.top + r.height / 2;
  function pe(type) {
    c.dispatchEvent(new PointerEvent(type, {clientX: x, clientY: y, bubbles: true, pointerId: 7}));
  }
  document.querySelector('#viewer-layers button[data-layer="susceptibility"]').click();
  var sel = document.getElementById("viewer-period");
  sel.value = "2";
  sel.dispatchEvent(new Event("change"));
  pe("pointermove");
  console.log("read: " + document.getElementById("viewer-readout").textContent);
  document.querySelector('#viewer-layers button[data-layer="confusion"]').click();
  document.getElementById("viewer-next").click();
  pe("pointermove");
  console.log("hover: " + document.getElementById("viewer-readout").textContent);
  c.dispatchEvent(new WheelEvent("wheel", {clientX: x, clientY: y, deltaY: -400, bubbles: true,
                                           cancelable: true}));
  pe("pointerdown"); pe("pointerup");
  console.log("pinned: " + document.getElementById("viewer-readout").textContent);
  console.log("legend: " + document.getElementById("viewer-legend").textContent);
  var px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, seen = {};
  for (var i = 0; i < px.length; i += 4) { seen[px[i] + "," + px[i + 1] + "," + px[i + 2]] = 1; }
  console.log("canvas colours: " + Object.keys(seen).length);
  document.getElementById("viewer").scrollIntoView();
})();
</script>"""


def _chromium(page: Path, tmp_path: Path, shot: Path) -> list[str]:
    """Console lines of a headless chromium that loads ``page`` and screenshots it."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1400,1000",
        "--virtual-time-budget=4000",
        "--enable-logging=stderr",
        "--v=0",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line] or [proc.stderr]


def _messages(console: list[str]) -> list[str]:
    return [re.search(r'"(.*)", source', line).group(1) for line in console if '", source' in line]


def _assert_not_blank(shot: Path) -> None:
    """A rendered page: a PNG with many colours and far from uniform, not a white sheet."""
    from matplotlib.image import imread

    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = (imread(shot)[..., :3] * 255).round().astype(np.uint8)
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    non_white = np.mean(np.any(rgb < 245, axis=-1))
    assert len(colours) > 200 and non_white > 0.05, (len(colours), non_white)


def test_report_renders_in_headless_chromium_without_console_errors(built, tmp_path):
    _need_chromium()
    shot = tmp_path / "report.png"
    console = _chromium(built, tmp_path, shot)
    assert any('"viewer ready"' in line for line in console), console[-5:]
    errors = [line for line in console if '"viewer ready"' not in line]
    assert not errors, errors  # any console message (an error, an uncaught exception) fails
    _assert_not_blank(shot)


def test_viewer_interactions_in_headless_chromium(built, tmp_path):
    """Switch layer and period, read a cell (its value checked against the map file), step,
    zoom, pin; no console error; the map canvas and the screenshot are not blank."""
    _need_chromium()
    page = tmp_path / "interact.html"
    # the report's Content-Security-Policy runs scripts by hash only: allow the injected one
    injected = re.search(r"<script>(.*?)</script>", _INTERACT, flags=re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(injected.encode()).digest()).decode()
    text = built.read_text().replace("script-src ", f"script-src 'sha256-{digest}' ", 1)
    page.write_text(text.replace("</body>", _INTERACT + "</body>"))
    shot = tmp_path / "interact.png"
    console = _chromium(page, tmp_path, shot)
    messages = _messages(console)
    assert "viewer ready" in messages, console[-5:]
    read = next(m for m in messages if m.startswith("read: "))
    hover = next(m for m in messages if m.startswith("hover: "))
    pinned = next(m for m in messages if m.startswith("pinned: "))
    legend = next(m for m in messages if m.startswith("legend: "))
    colours = next(m for m in messages if m.startswith("canvas colours: "))
    # the cell read at period 2 shows the susceptibility that the map file holds there
    row, col = (int(v) for v in re.search(r"cell row (\d+), col (\d+)", read).groups())
    assert NAMES[2] in read
    value = float(re.search(r"susceptibility([-0-9.e]+)", read).group(1))
    data = load_report_inputs(built.parent)
    assert value == pytest.approx(data.susceptibility[2, row, col], rel=2e-3, abs=1e-3)
    # stepping wraps to the first period; the readout names the cell, CRS and every layer
    assert "cell row" in hover and "EPSG:32645" in hover and NAMES[0] in hover
    for label in (
        "hazard",
        "susceptibility",
        "predicted density",
        "observed density",
        "residual",
        "confusion",
    ):
        assert label in hover
    assert pinned.startswith("pinned: pinned cell row")
    assert "true positive" in legend and "false negative" in legend
    assert int(colours.split(": ")[1]) >= 4  # the confusion classes drawn, not an empty canvas
    others = [
        m for m in messages if not m.startswith(("read:", "hover:", "pinned:", "legend:", "canvas"))
    ]
    assert others == ["viewer ready"], others
    assert len(messages) == len(console), console  # every console line is one of ours
    _assert_not_blank(shot)


# Period names as a hostile input file could carry them: markup that would run if inserted as
# HTML, and a script-tag breakout of the embedded JSON.
HOSTILE = [
    "<img src=x onerror=\"console.log('pwned img')\">",
    "</script><script>console.log('pwned script')</script>",
    "Pre-monsoon <b onmouseover=console.log('pwned')>2</b>",
]


def test_hostile_period_names_render_as_text_in_headless_chromium(tmp_path):
    """A report whose period names are markup: chromium shows them as text, runs none of it
    (no console line but the viewer's own), and the page still works."""
    _need_chromium()
    folder = _synthetic_folder(tmp_path, names=HOSTILE)
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    page = folder / "report.html"
    shot = tmp_path / "hostile.png"
    console = _chromium(page, tmp_path, shot)
    messages = _messages(console)
    assert messages == ["viewer ready"], console[-5:]
    assert not any("pwned" in line for line in console)
    _assert_not_blank(shot)


@pytest.mark.slow
@pytest.mark.skipif(
    not (GORKHA / "observed_area_density.tif").exists(), reason=f"real data not found at {GORKHA}"
)
def test_report_on_real_gorkha_evaluation(tmp_path):
    maps = MapFiles(
        GORKHA / "observed_area_density.tif",
        GORKHA / "paper_predicted_susceptibility.tif",
        GORKHA / "paper_predicted_area_density.tif",
    )
    evaluate_files(
        maps,
        threshold=0.5,
        out_dir=tmp_path,
        show_table=False,
    )
    text = build_report(tmp_path).read_text()
    _assert_self_contained(text)
    assert "EPSG:32645" in text and "Post-monsoon 2018" in text
    assert "0.999" in text  # pooled AUC card


def test_report_with_hazard_and_uncertainty_but_no_density(tmp_path):
    """Optional maps: a given hazard and an uncertainty map, no density; a quiet period."""
    rng = np.random.default_rng(3)
    shape = (2, 10, 12)
    observed = np.where(rng.random(shape) > 0.7, rng.gamma(0.6, 1.5, shape), 0.0)
    observed[1] = 0.0  # an all-negative period: metrics undefined, noted, no crash
    maps = {
        "observed": observed,
        "susceptibility": rng.random(shape),
        "hazard": rng.gamma(0.5, 0.2, shape),
        "uncertainty": rng.random(shape) * 0.2,
    }
    paths = {
        k: write_raster(tmp_path / f"{k}.tif", a, TRANSFORM, "EPSG:32645", NAMES[:2])
        for k, a in maps.items()
    }
    evaluate_files(
        MapFiles(paths["observed"], paths["susceptibility"], hazard=paths["hazard"]),
        threshold=0.5,
        out_dir=tmp_path,
        show_table=False,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["inputs"]["uncertainty"] = str(paths["uncertainty"])
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = build_report(tmp_path).read_text()
    _assert_self_contained(text)
    assert "No density map: no residuals." in text and "Notes on undefined metrics" in text
    payload = json.loads(re.search(r'id="viewer-data">(.*?)</script>', text, re.S).group(1))
    assert set(payload["layers"]) == {
        "hazard",
        "susceptibility",
        "observed",
        "uncertainty",
        "confusion",
    }


VIEWER_JS = Path(__file__).parents[2] / "src" / "landslide_hazard" / "report" / "viewer.js"
# input-derived strings the viewer puts on the page (period names, layer labels and units, the
# CRS name, the confusion class names)
INPUT_TEXT = (
    "data.periods[",
    "spec.label",
    "spec.unit",
    "data.grid.crs_name",
    "data.confusion_names[",
    "data.layers[k].label",
)


def test_viewer_builds_html_only_from_escaped_input_text():
    """Every use of input text in the viewer goes through esc(), except where it is set as
    text (a line assigning textContent) or tested as a condition (``spec.unit ? ... : ""``)."""
    uses = 0
    for number, line in enumerate(VIEWER_JS.read_text().splitlines(), 1):
        if "textContent" in line:
            continue
        for token in INPUT_TEXT:
            for m in re.finditer(re.escape(token), line):
                uses += 1
                escaped = line[: m.start()].endswith("esc(")
                condition = line[m.end() :].lstrip().startswith("?")
                assert escaped or condition, (
                    f"viewer.js:{number}: {token} reaches HTML unescaped: {line.strip()}"
                )
    assert uses >= 7  # the readout (period, CRS, labels, units, classes) and the legends


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_viewer_escape_function_neutralises_markup(tmp_path):
    src = VIEWER_JS.read_text()
    esc = re.search(r"function esc\(text\) \{.*?\n  \}", src, flags=re.S).group(0)
    script = tmp_path / "esc.js"
    script.write_text(
        esc + '\nprocess.stdout.write(esc("<img src=x onerror=\\"alert(1)\\"> & \'q\'"));\n'
    )
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout
    assert out == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &#39;q&#39;"


def _linked_evaluation(tmp_path):
    """The demo's layout: RUN/maps, RUN/metrics.json (held-out scores of a fold-0 spatial run on
    synthetic data), and RUN/evaluation scored with the split's roles (2 = test) as folds."""
    folder = _synthetic_folder(tmp_path, with_folds=False)
    ev = json.loads((folder / "metrics.json").read_text())
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "maps", run / "maps")
    held_out = {**ev, "pooled": {**ev["pooled"]}}
    held_out["pooled"]["occurrence"] = {**ev["pooled"]["occurrence"], "auc": 0.777}
    run_metrics = {
        "protocol": "spatial",
        "fold": 0,
        "leaky": False,
        "threshold": 0.5,
        "model": held_out,
        "oracle_auc": 0.912,
        "skill_pooled": 0.654,
        "truth_dir": str(tmp_path / "truth"),
        "calibration": {
            "kind": "platt",
            "slope": 0.81,
            "intercept": -0.42,
            "n_cells": 640,
            "ece_raw": 0.05,
            "ece_calibrated": 0.02,
            "period_shifts": {"<b>wet</b>": 0.31, "dry": -0.2},
            "n_level_cells": 1900,
            "density_blend": {"weight": 0.5, "constant": 1.25, "n_cells": 90, "r_val": 0.2},
            "period_density_factors": {"<b>wet</b>": 1.5, "dry": 0.75},
            "n_density_level_cells": 300,
            "density_level": 1.2,
        },
    }
    (run / "metrics.json").write_text(json.dumps(run_metrics))
    roles = np.zeros((18, 24))
    roles[:, 8:12] = 1
    roles[:, 12:] = 2
    roles_tif = write_raster(
        run / "evaluation" / "roles.tif",
        roles,
        TRANSFORM,
        "EPSG:32645",
        ["role: 0 train, 1 val, 2 test"],
    )
    maps = run / "maps"
    evaluate_files(
        MapFiles(
            maps / "observed.tif",
            maps / "susceptibility.tif",
            maps / "density.tif",
            folds=roles_tif,
        ),
        out_dir=run / "evaluation",
        threshold=0.5,
        show_table=False,
        run=run,
    )
    return run


def test_evaluation_of_a_run_shows_its_held_out_and_oracle_cards(tmp_path, monkeypatch):
    """The demo's report (an evaluation linked to its run): the oracle and skill cards as
    ``report RUN`` shows them, the held-out label naming the run's test fold (0, not the roles
    raster's value 2), a scale bar and north arrow on every static map, colour bars with tick
    labels in the Figure objects, limitations for synthetic data citing the paper's sections."""
    run = _linked_evaluation(tmp_path)
    evaluation = run / "evaluation"
    assert json.loads((evaluation / "metrics.json").read_text())["run"] == ".."
    rendered = []
    real = figures.to_png_base64

    def capture(fig, dpi=96):
        rendered.append(fig)
        return real(fig, dpi)

    monkeypatch.setattr(figures, "to_png_base64", capture)
    text = build_report(evaluation).read_text()
    # the skill cards: held-out AUC, oracle AUC and skill of the run
    held = text[text.index("<h3>Held out:") : text.index('id="viewer"')]
    assert "the run&#x27;s test cells (protocol spatial, test fold 0)" in held
    assert "fold 2" not in held
    for key, value in (("AUC-ROC", "0.777"), ("oracle AUC", "0.912"), ("skill", "0.654")):
        assert re.search(rf'<div class="k">{key}</div><div class="v">{value}</div>', held), key
    # every static map: a scale bar with its length in km and a north arrow
    maps = re.findall(r'<figure class="map" ([^>]*)>', text)
    titles = re.findall(r'<figure class="map" [^>]*><img alt="([^"]+)"', text)
    assert titles == [
        "Hazard",
        "Susceptibility",
        "Predicted density",
        "Observed density",
        "Confusion maps",
        "Residuals",
    ]
    for attrs in maps:
        assert re.search(r'data-scale-bar="\d+(\.\d+)? km"', attrs), attrs
        assert 'data-north-arrow="yes"' in attrs
    # colour bars in the Figure objects before rendering: at least two labelled ticks each,
    # the labels being the tick values
    bars = [ax for fig in rendered for ax in fig.axes if getattr(ax, "_colorbar", None)]
    map_bars = [ax for ax in bars if "cells" not in ax.get_ylabel()]
    # hazard, susceptibility, predicted and observed density, residual; then the scatters'
    assert len(map_bars) == 5 and len(bars) > 5
    for ax in bars:
        labels = [t.get_text() for t in ax.yaxis.get_ticklabels()]
        assert len([x for x in labels if x]) >= 2, (ax.get_ylabel(), labels)
    for ax in map_bars:  # plain numbers, equal to the ticks they label
        labels = [t.get_text() for t in ax.yaxis.get_ticklabels()]
        np.testing.assert_allclose([float(x) for x in labels], ax.yaxis.get_ticklocs(), rtol=1e-6)
    # the run's stored calibration, its period names escaped
    cal = text[text.index("<h3>Calibration stored in the run</h3>") :]
    cal = cal[: cal.index("</p>")]
    assert "slope 0.810, intercept -0.420" in cal and "640 validation cells" in cal
    assert "&lt;b&gt;wet&lt;/b&gt; +0.31" in cal and "dry -0.20" in cal
    assert "fitted on its 1,900 training and validation cells" in cal
    assert "toward 1.250 %" in cal and "weight 0.500" in cal
    assert "on its 300 positive training and validation cells" in cal
    assert "&lt;b&gt;wet&lt;/b&gt; x1.50" in cal and "dry x0.75" in cal
    assert "x1.20 for a period without its own" in cal
    run_text = build_report(run).read_text()  # ``report RUN`` shows the same cards
    assert re.search(r'<div class="k">oracle AUC</div><div class="v">0.912</div>', run_text)
    # limitations fit synthetic data and cite the paper's sections
    limits = text[text.index('id="limits"') :]
    assert "Synthetic data." in limits and "truth/" in limits
    assert "Sect. 4" in limits and "Sect. 6.2" in limits
    assert "Gorkha" not in limits and "2015-2018" not in limits


def test_colorbar_ticks_label_log_symlog_and_linear_scales():
    from matplotlib import colors as mcolors

    assert colorbar_ticks(mcolors.LogNorm(0.01, 12.0)) == (
        [0.01, 0.1, 1.0, 10.0],
        ["0.01", "0.1", "1", "10"],
    )
    assert colorbar_ticks(mcolors.LogNorm(0.02, 0.05))[1] == ["0.02", "0.05"]  # inside a decade
    ticks, labels = colorbar_ticks(mcolors.SymLogNorm(0.1, vmin=-2.0, vmax=2.0))
    assert labels == ["-1", "-0.1", "0", "0.1", "1"]
    ticks, labels = colorbar_ticks(mcolors.Normalize(0, 1))
    assert labels[0] == "0" and labels[-1] == "1" and len(labels) >= 3


def test_uncertainty_layer_says_what_it_is_and_its_unit(tmp_path):
    """predict's uncertainty.tif tags (quantity, statistic, method, units) reach the caption,
    the colour bar, the viewer layer and the limitations."""
    from landslide_hazard.predict.uncertainty import write_uncertainty_tif

    folder = _synthetic_folder(tmp_path, with_folds=False)
    std = np.random.default_rng(2).random((3, 18, 24)) * 0.1
    path = write_uncertainty_tif(
        tmp_path / "maps" / "uncertainty.tif",
        std,
        TRANSFORM,
        "EPSG:32645",
        NAMES,
        quantity="susceptibility",
        method="MC dropout, 8 passes, dropout 0.3",
    )
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["inputs"]["uncertainty"] = str(path)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    data = load_report_inputs(folder)
    assert data.uncertainty_label == "std of the susceptibility (probability)"
    text = build_report(folder).read_text()
    assert "the std of the susceptibility (probability). Made by MC dropout, 8 passes" in text
    payload = json.loads(re.search(r'id="viewer-data">(.*?)</script>', text, re.S).group(1))
    layer = payload["layers"]["uncertainty"]
    assert layer["unit"] == "probability"
    assert layer["description"].startswith("std of the susceptibility (probability)")
    limits = text[text.index('id="limits"') :]
    assert "epistemic" in limits and "Synthetic data." not in limits  # no oracle: real data
    assert "Sect. 8.2" in limits
