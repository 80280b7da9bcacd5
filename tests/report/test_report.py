"""build_report on a small synthetic evaluation folder (and on the real gorkha files, slow)."""

from __future__ import annotations

import base64
import json
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
from landslide_hazard.report import build_report, load_report_inputs
from landslide_hazard.report.build import _cards, block_mean, viewer_payload
from landslide_hazard.report.figures import confusion_classes, map_extent_km, nice_scale_length

REPO_ROOT = Path(__file__).resolve().parents[2]
GORKHA = REPO_ROOT.parent / "shared" / "data" / "gorkha2015"
NAMES = ["Co-seismic", "Post-monsoon 1", "Pre-monsoon 2"]
TRANSFORM = Affine(1000.0, 0, 300000.0, 0, -1000.0, 3100000.0)


def _synthetic_folder(tmp_path: Path, with_folds: bool = True) -> Path:
    rng = np.random.default_rng(7)
    shape = (3, 18, 24)
    latent = rng.random(shape)
    observed = np.where(latent > 0.75, rng.gamma(0.6, 1.5, shape), 0.0)
    sus = np.clip(latent + rng.normal(0, 0.2, shape), 0, 1)
    dens = np.clip(observed * 0.7 + rng.gamma(0.5, 0.4, shape), 0, None)
    observed[:, :3, :4] = np.nan
    maps = tmp_path / "maps"
    paths = {
        k: write_raster(maps / f"{k}.tif", a, TRANSFORM, "EPSG:32645", NAMES)
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
    cards = _cards(data.metrics)
    assert "Held out: the run&#x27;s test cells (protocol spatial, fold 1)" in cards
    assert "0.777" in cards and "0.690" in cards  # held-out AUC and skill
    (run / "maps" / "susceptibility.tif").unlink()
    with pytest.raises(RasterError, match="holds no susceptibility.tif"):
        load_report_inputs(run)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# Drives the viewer like a user: pick a layer, step a period, hover, zoom, click to pin.
_INTERACT = """<script>
(function () {
  var c = document.getElementById("viewer-canvas"), r = c.getBoundingClientRect();
  var x = r.left + r.width / 2, y = r.top + r.height / 2;
  function pe(type) {
    c.dispatchEvent(new PointerEvent(type, {clientX: x, clientY: y, bubbles: true, pointerId: 7}));
  }
  document.querySelector('#viewer-layers button[data-layer="confusion"]').click();
  document.getElementById("viewer-next").click();
  pe("pointermove");
  console.log("hover: " + document.getElementById("viewer-readout").textContent);
  c.dispatchEvent(new WheelEvent("wheel", {clientX: x, clientY: y, deltaY: -400, bubbles: true,
                                           cancelable: true}));
  pe("pointerdown"); pe("pointerup");
  console.log("pinned: " + document.getElementById("viewer-readout").textContent);
  console.log("legend: " + document.getElementById("viewer-legend").textContent);
})();
</script>"""


def _chromium(page: Path, tmp_path: Path, shot: Path) -> list[str]:
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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line] or [proc.stderr]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(built, tmp_path):
    shot = tmp_path / "report.png"
    console = _chromium(built, tmp_path, shot)
    assert any('"viewer ready"' in line for line in console), console[-5:]
    errors = [line for line in console if '"viewer ready"' not in line]
    assert not errors, errors
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_viewer_interactions_in_headless_chromium(built, tmp_path):
    page = tmp_path / "interact.html"
    page.write_text(built.read_text().replace("</body>", _INTERACT + "</body>"))
    console = _chromium(page, tmp_path, tmp_path / "interact.png")
    messages = [
        re.search(r'"(.*)", source', line).group(1) for line in console if '", source' in line
    ]
    assert "viewer ready" in messages, console[-5:]
    hover = next(m for m in messages if m.startswith("hover: "))
    pinned = next(m for m in messages if m.startswith("pinned: "))
    legend = next(m for m in messages if m.startswith("legend: "))
    # the readout names the cell, its CRS coordinates, the stepped period and every layer
    assert "cell row" in hover and "EPSG:32645" in hover and NAMES[1] in hover
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
    others = [m for m in messages if not m.startswith(("hover:", "pinned:", "legend:"))]
    assert others == ["viewer ready"], others


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
