/* landslide-hazard report: offline map viewer (no network, no libraries).
 * Reads the JSON in <script id="viewer-data">: a valid-cell bit mask, per layer and period the
 * valid cells' values as little-endian float16 (base64), colour tables and scales.
 * Residual (observed - density) and confusion (TP/FP/FN/TN) layers are derived here. */
(function () {
  "use strict";
  var el = document.getElementById("viewer-data");
  if (!el) { return; }
  var data = JSON.parse(el.textContent);
  var H = data.grid.height, W = data.grid.width, T = data.grid.transform;

  function bytes(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }
  var HALF = new Float32Array(65536);
  for (var h = 0; h < 65536; h++) {
    var sign = (h & 0x8000) ? -1 : 1, ex = (h >> 10) & 0x1f, fr = h & 0x3ff;
    HALF[h] = ex === 0 ? sign * Math.pow(2, -14) * (fr / 1024)
      : ex === 31 ? (fr ? NaN : sign * Infinity)
      : sign * Math.pow(2, ex - 15) * (1 + fr / 1024);
  }
  var maskBits = bytes(data.mask), validIdx = [];
  for (var i = 0; i < H * W; i++) { if (maskBits[i >> 3] & (1 << (i & 7))) { validIdx.push(i); } }
  var LUT = {};
  Object.keys(data.colormaps).forEach(function (k) { LUT[k] = bytes(data.colormaps[k]); });

  var cache = {};
  function decode(layer, p) {
    var key = layer + "/" + p;
    if (cache[key]) { return cache[key]; }
    var out = new Float32Array(H * W).fill(NaN), spec = data.layers[layer];
    if (spec.derived === "residual") {
      var o = decode("observed", p), d = decode("density", p);
      for (var a = 0; a < out.length; a++) { out[a] = o[a] - d[a]; }
    } else if (spec.derived === "confusion") {
      var ob = decode("observed", p), s = decode("susceptibility", p);
      for (var b = 0; b < out.length; b++) {
        if (isNaN(ob[b]) || isNaN(s[b])) { continue; }
        var y = ob[b] > data.min_density, yhat = s[b] >= data.threshold;
        out[b] = y ? (yhat ? 3 : 2) : (yhat ? 1 : 0);
      }
    } else {
      var raw = bytes(spec.periods[p]), u16 = new Uint16Array(raw.buffer);
      for (var c = 0; c < validIdx.length; c++) { out[validIdx[c]] = HALF[u16[c]]; }
    }
    cache[key] = out;
    return out;
  }

  function unit(spec, v) {
    var n = spec.norm;
    if (n.kind === "log") {
      if (!(v > n.vmin)) { return 0; }
      return (Math.log(v) - Math.log(n.vmin)) / (Math.log(n.vmax) - Math.log(n.vmin));
    }
    if (n.kind === "symlog") {
      var f = function (x) { return (x < 0 ? -1 : 1) * Math.log10(1 + Math.abs(x) / n.linthresh); };
      return 0.5 + 0.5 * f(v) / f(n.vmax);
    }
    return (v - n.vmin) / (n.vmax - n.vmin);
  }
  function rgb(spec, v) {
    if (spec.derived === "confusion") { return data.confusion_colors[v]; }
    var t = Math.min(1, Math.max(0, unit(spec, v))), lut = LUT[spec.cmap], k = Math.round(t * 255) * 3;
    return [lut[k], lut[k + 1], lut[k + 2]];
  }

  var state = { layer: data.default_layer, period: 0, scale: 1, ox: 0, oy: 0, pin: null };
  var canvas = document.getElementById("viewer-canvas"), ctx = canvas.getContext("2d");
  var off = document.createElement("canvas"); off.width = W; off.height = H;
  var offCtx = off.getContext("2d");
  var readout = document.getElementById("viewer-readout");
  var legend = document.getElementById("viewer-legend");
  var periodSel = document.getElementById("viewer-period");
  var periodRange = document.getElementById("viewer-period-range");
  var layerBox = document.getElementById("viewer-layers");

  function paintOffscreen() {
    var spec = data.layers[state.layer], vals = decode(state.layer, state.period);
    var img = offCtx.createImageData(W, H), px = img.data;
    for (var q = 0; q < vals.length; q++) {
      var v = vals[q];
      if (isNaN(v)) { px[4 * q + 3] = 0; continue; }
      var col = rgb(spec, v);
      px[4 * q] = col[0]; px[4 * q + 1] = col[1]; px[4 * q + 2] = col[2]; px[4 * q + 3] = 255;
    }
    offCtx.putImageData(img, 0, 0);
  }
  function resize() {
    var r = canvas.parentElement.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    var cw = Math.max(300, Math.floor(r.width)), ch = Math.round(Math.min(640, Math.max(320, cw * 0.62)));
    canvas.style.width = cw + "px"; canvas.style.height = ch + "px";
    canvas.width = Math.round(cw * dpr); canvas.height = Math.round(ch * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  function fit() {
    var cw = canvas.width / (window.devicePixelRatio || 1), ch = canvas.height / (window.devicePixelRatio || 1);
    state.scale = Math.min(cw / W, ch / H) * 0.96;
    state.ox = (cw - W * state.scale) / 2; state.oy = (ch - H * state.scale) / 2;
  }
  function niceKm(target) {
    var p = Math.pow(10, Math.floor(Math.log10(target))), ms = [5, 2, 1];
    for (var m = 0; m < ms.length; m++) { if (ms[m] * p <= target) { return ms[m] * p; } }
    return p;
  }
  function draw() {
    var cw = canvas.width / (window.devicePixelRatio || 1), ch = canvas.height / (window.devicePixelRatio || 1);
    ctx.fillStyle = "#f3f4f6"; ctx.fillRect(0, 0, cw, ch);
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(state.ox, state.oy, W * state.scale, H * state.scale);
    ctx.drawImage(off, state.ox, state.oy, W * state.scale, H * state.scale);
    ctx.strokeStyle = "#9ca3af"; ctx.lineWidth = 1;
    ctx.strokeRect(state.ox, state.oy, W * state.scale, H * state.scale);
    if (state.pin) {
      ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
      ctx.strokeRect(state.ox + state.pin[1] * state.scale - 1, state.oy + state.pin[0] * state.scale - 1,
        state.scale + 2, state.scale + 2);
    }
    // scale bar
    var cellKm = Math.abs(T[0]) / 1000, pxPerKm = state.scale / cellKm;
    var km = niceKm(120 / pxPerKm), len = km * pxPerKm, x0 = 16, y0 = ch - 22;
    ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(x0 - 6, y0 - 20, len + 12, 32);
    ctx.fillStyle = "#111"; ctx.fillRect(x0, y0, len / 2, 6);
    ctx.strokeStyle = "#111"; ctx.lineWidth = 1; ctx.strokeRect(x0, y0, len, 6);
    ctx.font = "12px system-ui, sans-serif"; ctx.textAlign = "center";
    ctx.fillText(km + " km", x0 + len / 2, y0 - 6);
    ctx.textAlign = "left";
    ctx.fillText("N \u2191", cw - 40, 22);
  }
  // Text from the inputs (period names, labels, units, the CRS name) may hold markup: escape
  // it wherever HTML is built from strings.
  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(v, spec) {
    if (isNaN(v)) { return "no data"; }
    if (spec.derived === "confusion") { return esc(data.confusion_names[v]); }
    var a = Math.abs(v);
    var s = a !== 0 && (a < 0.001 || a >= 1e5) ? v.toExponential(2) : v.toPrecision(3);
    return s + (spec.unit ? " " + esc(spec.unit) : "");
  }
  function showCell(row, col, pinned) {
    if (row < 0 || col < 0 || row >= H || col >= W) {
      readout.innerHTML = "<span class='muted'>Hover over the map to read a cell; click to pin it.</span>";
      return;
    }
    var x = T[2] + T[0] * (col + 0.5) + T[1] * (row + 0.5), y = T[5] + T[3] * (col + 0.5) + T[4] * (row + 0.5);
    var rows = ["<div class='ro-head'>" + (pinned ? "pinned " : "") + "cell row " + row + ", col " + col +
      " &middot; E " + x.toFixed(0) + " m, N " + y.toFixed(0) + " m (" + esc(data.grid.crs_name) + ")" +
      " &middot; " + esc(data.periods[state.period]) + "</div><table>"];
    Object.keys(data.layers).forEach(function (k) {
      var spec = data.layers[k], v = decode(k, state.period)[row * W + col];
      rows.push("<tr" + (k === state.layer ? " class='cur'" : "") + "><th>" + esc(spec.label) + "</th><td>" +
        fmt(v, spec) + "</td></tr>");
    });
    rows.push("</table>");
    readout.innerHTML = rows.join("");
  }
  function drawLegend() {
    var spec = data.layers[state.layer];
    if (spec.derived === "confusion") {
      legend.innerHTML = data.confusion_names.map(function (n, k) {
        var c = data.confusion_colors[k];
        return "<span class='swatch' style='background:rgb(" + c.join(",") + ")'></span>" + esc(n);
      }).join(" ");
      return;
    }
    var cv = document.createElement("canvas"); cv.width = 256; cv.height = 12;
    var c2 = cv.getContext("2d"), n = spec.norm, lut = LUT[spec.cmap];
    for (var k = 0; k < 256; k++) {
      c2.fillStyle = "rgb(" + lut[3 * k] + "," + lut[3 * k + 1] + "," + lut[3 * k + 2] + ")";
      c2.fillRect(k, 0, 1, 12);
    }
    var lo = n.kind === "symlog" ? -n.vmax : n.vmin;
    legend.innerHTML = "<span class='lg-label'>" + esc(spec.label) + (spec.unit ? " (" + esc(spec.unit) + ")" : "") +
      "</span><span class='lg-end'>" + (n.kind === "log" ? "\u2264" : "") + lo.toPrecision(2) + "</span>";
    cv.className = "lg-bar"; legend.appendChild(cv);
    var hi = document.createElement("span"); hi.className = "lg-end";
    hi.textContent = n.vmax.toPrecision(2) + (n.kind === "log" ? " (log scale)" : n.kind === "symlog" ? " (symmetric log)" : "");
    legend.appendChild(hi);
  }
  function refresh() {
    paintOffscreen(); draw(); drawLegend();
    periodSel.value = String(state.period); periodRange.value = String(state.period);
    Array.prototype.forEach.call(layerBox.querySelectorAll("button"), function (b) {
      b.setAttribute("aria-pressed", b.dataset.layer === state.layer ? "true" : "false");
    });
    if (state.pin) { showCell(state.pin[0], state.pin[1], true); }
  }

  data.periods.forEach(function (name, k) {
    var o = document.createElement("option"); o.value = String(k); o.textContent = name; periodSel.appendChild(o);
  });
  periodRange.max = String(data.periods.length - 1);
  Object.keys(data.layers).forEach(function (k) {
    var b = document.createElement("button"); b.type = "button"; b.dataset.layer = k;
    b.textContent = data.layers[k].label; b.title = data.layers[k].description || "";
    b.addEventListener("click", function () { state.layer = k; refresh(); });
    layerBox.appendChild(b);
  });
  function setPeriod(p) { state.period = (p + data.periods.length) % data.periods.length; refresh(); }
  periodSel.addEventListener("change", function () { setPeriod(parseInt(periodSel.value, 10)); });
  periodRange.addEventListener("input", function () { setPeriod(parseInt(periodRange.value, 10)); });
  document.getElementById("viewer-prev").addEventListener("click", function () { setPeriod(state.period - 1); });
  document.getElementById("viewer-next").addEventListener("click", function () { setPeriod(state.period + 1); });
  function zoomAt(mx, my, f) {
    var ns = Math.min(200, Math.max(0.2, state.scale * f)); f = ns / state.scale;
    state.ox = mx - (mx - state.ox) * f; state.oy = my - (my - state.oy) * f; state.scale = ns; draw();
  }
  function centre() { var r = canvas.getBoundingClientRect(); return [r.width / 2, r.height / 2]; }
  document.getElementById("viewer-zoom-in").addEventListener("click", function () { var c = centre(); zoomAt(c[0], c[1], 1.5); });
  document.getElementById("viewer-zoom-out").addEventListener("click", function () { var c = centre(); zoomAt(c[0], c[1], 1 / 1.5); });
  document.getElementById("viewer-reset").addEventListener("click", function () { fit(); draw(); });
  canvas.addEventListener("wheel", function (ev) {
    ev.preventDefault(); var r = canvas.getBoundingClientRect();
    zoomAt(ev.clientX - r.left, ev.clientY - r.top, Math.pow(1.0015, -ev.deltaY));
  }, { passive: false });
  var drag = null;
  canvas.addEventListener("pointerdown", function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, ox: state.ox, oy: state.oy, moved: false };
    try { canvas.setPointerCapture(ev.pointerId); } catch (e) { /* synthetic or ended pointer */ }
  });
  function cellAt(ev) {
    var r = canvas.getBoundingClientRect();
    return [Math.floor((ev.clientY - r.top - state.oy) / state.scale), Math.floor((ev.clientX - r.left - state.ox) / state.scale)];
  }
  canvas.addEventListener("pointermove", function (ev) {
    if (drag) {
      var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; }
      state.ox = drag.ox + dx; state.oy = drag.oy + dy; draw(); return;
    }
    if (!state.pin) { var c = cellAt(ev); showCell(c[0], c[1], false); }
  });
  canvas.addEventListener("pointerup", function (ev) {
    if (drag && !drag.moved) {
      var c = cellAt(ev);
      var inside = c[0] >= 0 && c[1] >= 0 && c[0] < H && c[1] < W;
      var same = state.pin && state.pin[0] === c[0] && state.pin[1] === c[1];
      state.pin = inside && !same ? c : null;
      draw(); showCell(c[0], c[1], !!state.pin);
    }
    drag = null;
  });
  canvas.addEventListener("keydown", function (ev) {
    if (ev.key === "ArrowRight") { setPeriod(state.period + 1); ev.preventDefault(); }
    if (ev.key === "ArrowLeft") { setPeriod(state.period - 1); ev.preventDefault(); }
  });
  // keep the user's pan and zoom when the window changes size (fit only on "fit")
  window.addEventListener("resize", function () { resize(); draw(); });

  resize(); fit(); refresh(); showCell(-1, -1, false);
  document.body.setAttribute("data-viewer-ready", "1");
  console.log("viewer ready");
})();
