// landscape report: draws the blocks of every section from the embedded JSON, on 2-D canvases
// (no WebGL, no network). Blocks: "plane" (3-D surface + contour map, selectors, log height),
// "lines" (series along one axis), "maps" (small heatmaps side by side). Tables are HTML already.
"use strict";
(function () {
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]];

  function viridis(t, light) {  // light: a factor for shading (1: the colour map's own colour)
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    var f = t * (VIRIDIS.length - 1), i = Math.min(Math.floor(f), VIRIDIS.length - 2), u = f - i;
    var a = VIRIDIS[i], b = VIRIDIS[i + 1], k = light === undefined ? 1 : light;
    function ch(n) { return Math.min(255, Math.round(k * (a[n] + u * (b[n] - a[n])))); }
    return "rgb(" + ch(0) + "," + ch(1) + "," + ch(2) + ")";
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function canvas(w, h, cls) {
    var c = el("canvas", cls), r = window.devicePixelRatio || 1;
    c.width = Math.round(w * r); c.height = Math.round(h * r);
    c.style.width = w + "px"; c.style.height = h + "px";
    var ctx = c.getContext("2d");
    ctx.setTransform(r, 0, 0, r, 0, 0);
    c.cssW = w; c.cssH = h; c.ctx = ctx;
    return c;
  }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v) {
    if (!isNum(v)) return "";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    return String(parseFloat(v.toPrecision(3)));
  }
  function range(values) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (isNum(v)) { if (v < lo) lo = v; if (v > hi) hi = v; } });
    if (lo === Infinity) return null;
    if (hi === lo) { hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 1e-3); }
    return [lo, hi];
  }
  function flat(grid) { var out = []; grid.forEach(function (row) { row.forEach(function (v) { out.push(v); }); }); return out; }
  function ticks(lo, hi, n) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n))), err = (hi - lo) / n / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }
  function logTicks(lo, hi) {
    var out = [];
    for (var e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      [1, 2, 5].forEach(function (m) { var v = m * Math.pow(10, e); if (v >= lo && v <= hi) out.push(v); });
    }
    return out.length >= 2 ? out : ticks(lo, hi, 4);
  }

  // ----------------------------------------------------------------- 2-D axes
  function Axes(c, xr, yr, opt) {
    opt = opt || {};
    var m = { l: 62, r: opt.right || 16, t: 24, b: 44 };
    var w = c.cssW - m.l - m.r, h = c.cssH - m.t - m.b;
    if (opt.equal) {  // equal scales: shrink one side of the box
      var sx = w / (xr[1] - xr[0]), sy = h / (yr[1] - yr[0]), s = Math.min(sx, sy);
      var nw = s * (xr[1] - xr[0]), nh = s * (yr[1] - yr[0]);
      m.l += (w - nw) / 2; m.t += (h - nh) / 2; w = nw; h = nh;
    }
    var ylog = !!opt.ylog;
    this.m = m; this.w = w; this.h = h; this.xr = xr; this.yr = yr; this.ylog = ylog; this.c = c;
    this.X = function (x) { return m.l + (x - xr[0]) / (xr[1] - xr[0]) * w; };
    this.Y = function (y) {
      var f = ylog ? (Math.log10(y) - Math.log10(yr[0])) / (Math.log10(yr[1]) - Math.log10(yr[0])) : (y - yr[0]) / (yr[1] - yr[0]);
      return m.t + h - f * h;
    };
  }
  Axes.prototype.frame = function (xlabel, ylabel, title) {
    var ctx = this.c.ctx, m = this.m, self = this;
    ctx.strokeStyle = "#333"; ctx.lineWidth = 1; ctx.setLineDash([]);
    ctx.strokeRect(m.l, m.t, this.w, this.h);
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "top";
    ticks(this.xr[0], this.xr[1], 6).forEach(function (v) {
      var x = self.X(v);
      ctx.beginPath(); ctx.moveTo(x, m.t + self.h); ctx.lineTo(x, m.t + self.h + 4); ctx.stroke();
      ctx.fillText(fmt(v), x, m.t + self.h + 6);
    });
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    (this.ylog ? logTicks(this.yr[0], this.yr[1]) : ticks(this.yr[0], this.yr[1], 5)).forEach(function (v) {
      var y = self.Y(v);
      ctx.beginPath(); ctx.moveTo(m.l - 4, y); ctx.lineTo(m.l, y); ctx.stroke();
      ctx.fillText(fmt(v), m.l - 6, y);
    });
    ctx.textAlign = "center"; ctx.textBaseline = "bottom"; ctx.font = "12px sans-serif";
    ctx.fillText(xlabel || "", m.l + this.w / 2, Math.min(this.c.cssH - 4, m.t + this.h + 34));
    if (title) { ctx.textBaseline = "bottom"; ctx.fillText(title, m.l + this.w / 2, Math.max(16, m.t - 6)); }
    ctx.save(); ctx.translate(Math.max(13, m.l - 48), m.t + this.h / 2); ctx.rotate(-Math.PI / 2); ctx.textBaseline = "middle";
    ctx.fillText(ylabel || "", 0, 0); ctx.restore();
  };
  Axes.prototype.clip = function () {
    var ctx = this.c.ctx;
    ctx.save(); ctx.beginPath(); ctx.rect(this.m.l, this.m.t, this.w, this.h); ctx.clip();
  };

  function legend(items) {
    var box = el("div", "legend");
    items.forEach(function (it) {
      var s = el("span"), sw = el("span", "sw" + (it.dash ? " dash" : "") + (it.faint ? " faint" : "") + (it.grey ? " grey" : ""));
      if (!it.grey) sw.style.borderTopColor = it.color;
      s.appendChild(sw); s.appendChild(document.createTextNode(it.label)); box.appendChild(s);
    });
    return box;
  }

  // ----------------------------------------------------------------- lines
  function drawLines(block, c, ylog) {
    var ctx = c.ctx, xs = [], ys = [];
    ctx.clearRect(0, 0, c.cssW, c.cssH);
    block.series.forEach(function (s) { xs = xs.concat(s.x); ys = ys.concat(s.y); });
    block.hlines.forEach(function (l) { ys.push(l.y); });
    if (ylog) ys = ys.filter(function (v) { return v > 0; });
    var xr = range(xs), yr = range(ys);
    if (!xr || !yr) { ctx.fillText("no values", 20, 20); return; }
    if (ylog) { yr = [yr[0] / 1.15, yr[1] * 1.15]; } else { var pad = (yr[1] - yr[0]) * 0.05; yr = [yr[0] - pad, yr[1] + pad]; }
    var ax = new Axes(c, xr, yr, { ylog: ylog, right: 120 });
    ax.clip();
    function path(s, keep) {
      var on = false;
      ctx.beginPath();
      for (var i = 0; i < s.x.length; i++) {
        var ok = isNum(s.x[i]) && isNum(s.y[i]) && (!ylog || s.y[i] > 0) && keep(i);
        if (!ok) { on = false; continue; }
        var px = ax.X(s.x[i]), py = ax.Y(s.y[i]);
        if (on) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        on = true;
      }
      ctx.stroke();
    }
    block.series.forEach(function (s, k) {  // faint parts first, behind everything
      if (!s.faint) return;
      ctx.strokeStyle = PALETTE[(s.color !== undefined ? s.color : k) % PALETTE.length];
      ctx.globalAlpha = 0.3; ctx.lineWidth = 0.7; ctx.setLineDash([]);
      path(s, function () { return true; });
      ctx.globalAlpha = 1;
    });
    block.hlines.forEach(function (l, k) {
      ctx.strokeStyle = "#777"; ctx.lineWidth = 1; ctx.setLineDash(k % 2 ? [6, 3, 1, 3] : [2, 3]);
      ctx.beginPath(); ctx.moveTo(ax.m.l, ax.Y(l.y)); ctx.lineTo(ax.m.l + ax.w, ax.Y(l.y)); ctx.stroke();
    });
    block.vlines.forEach(function (l) {
      ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.setLineDash([2, 3]);
      ctx.beginPath(); ctx.moveTo(ax.X(l.x), ax.m.t); ctx.lineTo(ax.X(l.x), ax.m.t + ax.h); ctx.stroke();
    });
    block.series.forEach(function (s, k) {
      var color = PALETTE[(s.color !== undefined ? s.color : k) % PALETTE.length];
      ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 1.8; ctx.setLineDash(s.dash ? [6, 4] : []);
      var keep = s.faint ? function (i) { return !s.faint[i]; } : function () { return true; };
      path(s, keep);
      if (s.x.length <= 80) {
        for (var i = 0; i < s.x.length; i++) {
          if (isNum(s.y[i]) && keep(i) && (!ylog || s.y[i] > 0)) { ctx.beginPath(); ctx.arc(ax.X(s.x[i]), ax.Y(s.y[i]), 2, 0, 2 * Math.PI); ctx.fill(); }
        }
      }
    });
    ctx.restore(); ctx.setLineDash([]);
    ctx.fillStyle = "#444"; ctx.font = "11px sans-serif"; ctx.textAlign = "left"; ctx.textBaseline = "middle";
    block.hlines.forEach(function (l) { ctx.fillText(l.label, ax.m.l + ax.w + 4, ax.Y(l.y)); });
    ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    block.vlines.forEach(function (l) { ctx.fillText(l.label, ax.X(l.x), ax.m.t - 2); });
    ax.frame(block.xlabel, block.ylabel + (ylog ? " (log)" : ""), "");
  }
  function linesBlock(node, block) {
    node.appendChild(el("div", "cap", block.title));
    var controls = el("div", "controls"), ylog = false;
    if (block.log_toggle) {
      var lab = el("label"), box = el("input"); box.type = "checkbox";
      lab.appendChild(box); lab.appendChild(document.createTextNode(" log scale"));
      box.addEventListener("change", function () { ylog = box.checked; drawLines(block, c, ylog); });
      controls.appendChild(lab); node.appendChild(controls);
    }
    var c = canvas(760, 330, "lines");
    node.appendChild(c);
    drawLines(block, c, ylog);
    var items = block.series.map(function (s, k) {
      return { label: s.label, color: PALETTE[(s.color !== undefined ? s.color : k) % PALETTE.length], dash: s.dash };
    });
    if (block.series.some(function (s) { return s.faint; })) items.push({ label: "OT swap stage (faint)", color: "#555", faint: true });
    node.appendChild(legend(items));
  }

  // ----------------------------------------------------------------- grids
  function edges(v) {  // cell edges around grid nodes
    var e = [v[0] - (v.length > 1 ? (v[1] - v[0]) / 2 : 0.5)];
    for (var i = 0; i + 1 < v.length; i++) e.push((v[i] + v[i + 1]) / 2);
    e.push(v[v.length - 1] + (v.length > 1 ? (v[v.length - 1] - v[v.length - 2]) / 2 : 0.5));
    return e;
  }
  function scaler(lo, hi, log) {
    if (log) { var a = Math.log10(lo), b = Math.log10(hi); return function (v) { return (Math.log10(v) - a) / (b - a); }; }
    return function (v) { return (v - lo) / (hi - lo); };
  }
  function colorbar(ctx, x, y, h, lo, hi, log) {
    for (var i = 0; i < h; i++) { ctx.fillStyle = viridis(1 - i / h); ctx.fillRect(x, y + i, 12, 1.5); }
    ctx.strokeStyle = "#333"; ctx.lineWidth = 1; ctx.strokeRect(x, y, 12, h);
    ctx.fillStyle = "#222"; ctx.font = "10px sans-serif"; ctx.textAlign = "left"; ctx.textBaseline = "middle";
    var s = scaler(lo, hi, log);
    (log ? logTicks(lo, hi) : ticks(lo, hi, 5)).forEach(function (v) { ctx.fillText(fmt(v), x + 15, y + h - s(v) * h); });
  }
  function heat(ax, x, y, grid, lo, hi, log) {
    var ctx = ax.c.ctx, ex = edges(x), ey = edges(y), s = scaler(lo, hi, log);
    for (var i = 0; i < x.length; i++) {
      for (var j = 0; j < y.length; j++) {
        var v = grid[i][j];
        ctx.fillStyle = isNum(v) && (!log || v > 0) ? viridis(s(v)) : "#dbdbdb";
        var x0 = ax.X(ex[i]), x1 = ax.X(ex[i + 1]), y0 = ax.Y(ey[j]), y1 = ax.Y(ey[j + 1]);
        ctx.fillRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0) + 0.6, Math.abs(y1 - y0) + 0.6);
      }
    }
  }
  // marching squares: the segments of the level set f = level over the grid's nodes
  function contourSegments(x, y, f, level) {
    var segs = [];
    function lerp(a, b, fa, fb) { return a + (level - fa) / (fb - fa) * (b - a); }
    for (var i = 0; i + 1 < x.length; i++) {
      for (var j = 0; j + 1 < y.length; j++) {
        var a = f[i][j], b = f[i + 1][j], c = f[i + 1][j + 1], d = f[i][j + 1];
        if (!(isNum(a) && isNum(b) && isNum(c) && isNum(d))) continue;
        var pts = [];
        if ((a < level) !== (b < level)) pts.push([lerp(x[i], x[i + 1], a, b), y[j]]);
        if ((b < level) !== (c < level)) pts.push([x[i + 1], lerp(y[j], y[j + 1], b, c)]);
        if ((c < level) !== (d < level)) pts.push([lerp(x[i + 1], x[i], c, d), y[j + 1]]);
        if ((d < level) !== (a < level)) pts.push([x[i], lerp(y[j + 1], y[j], d, a)]);
        if (pts.length === 2) segs.push(pts);
        else if (pts.length === 4) { segs.push([pts[0], pts[1]]); segs.push([pts[2], pts[3]]); }
      }
    }
    return segs;
  }
  function drawContour(c, block, grid, lo, hi, log, label) {
    var ctx = c.ctx;
    ctx.clearRect(0, 0, c.cssW, c.cssH);
    var x = block.x, y = block.y, ex = edges(x), ey = edges(y);
    var ax = new Axes(c, [ex[0], ex[ex.length - 1]], [ey[0], ey[ey.length - 1]], { equal: block.equal, right: 70 });
    ax.clip();
    heat(ax, x, y, grid, lo, hi, log);
    var f = log ? grid.map(function (r) { return r.map(function (v) { return isNum(v) && v > 0 ? Math.log10(v) : null; }); }) : grid;
    var flo = log ? Math.log10(lo) : lo, fhi = log ? Math.log10(hi) : hi;
    ctx.strokeStyle = "rgba(255,255,255,0.75)"; ctx.lineWidth = 1;
    for (var k = 1; k <= 14; k++) {
      contourSegments(x, y, f, flo + (fhi - flo) * k / 15).forEach(function (s) {
        ctx.beginPath(); ctx.moveTo(ax.X(s[0][0]), ax.Y(s[0][1])); ctx.lineTo(ax.X(s[1][0]), ax.Y(s[1][1])); ctx.stroke();
      });
    }
    if (block.trajectory && block.trajectory.length) {
      ctx.strokeStyle = "#e0245e"; ctx.fillStyle = "#e0245e"; ctx.lineWidth = 2.2;
      ctx.beginPath();
      block.trajectory.forEach(function (p, i) { if (i) ctx.lineTo(ax.X(p[0]), ax.Y(p[1])); else ctx.moveTo(ax.X(p[0]), ax.Y(p[1])); });
      ctx.stroke();
      if (!block.curve) block.trajectory.forEach(function (p) { ctx.beginPath(); ctx.arc(ax.X(p[0]), ax.Y(p[1]), 2.5, 0, 2 * Math.PI); ctx.fill(); });
    }
    ctx.restore();
    ctx.font = "bold 11px sans-serif"; ctx.textAlign = "left"; ctx.textBaseline = "bottom";
    block.anchors.forEach(function (a) {
      var px = ax.X(a[0]), py = ax.Y(a[1]);
      ctx.fillStyle = "#fff"; ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(px, py, 5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      var w = ctx.measureText(a[2]).width;
      ctx.fillStyle = "rgba(255,255,255,0.8)"; ctx.fillRect(px + 6, py - 19, w + 4, 14);
      ctx.fillStyle = "#000"; ctx.fillText(a[2], px + 8, py - 6);
    });
    ax.frame(block.xlabel, block.ylabel, label);
    colorbar(ctx, c.cssW - 62, ax.m.t, ax.h, lo, hi, log);
  }

  // ----------------------------------------------------------------- 3-D surface (painter's algorithm)
  function Surface3D(c, block) {
    this.c = c; this.block = block; this.az = -0.7; this.el = 0.55; this.zoom = 1; this.grid = null;
    var self = this, drag = null;
    c.addEventListener("mousedown", function (e) { drag = [e.clientX, e.clientY]; c.style.cursor = "grabbing"; });
    window.addEventListener("mouseup", function () { drag = null; c.style.cursor = ""; });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      self.az += (e.clientX - drag[0]) * 0.01;
      self.el = Math.max(0.02, Math.min(1.55, self.el + (e.clientY - drag[1]) * 0.01));
      drag = [e.clientX, e.clientY]; self.draw();
    });
    c.addEventListener("wheel", function (e) {
      e.preventDefault();
      self.zoom = Math.max(0.3, Math.min(6, self.zoom * Math.exp(-e.deltaY * 0.0015))); self.draw();
    }, { passive: false });
  }
  Surface3D.prototype.set = function (grid, lo, hi, log, label) {
    this.grid = grid; this.lo = lo; this.hi = hi; this.log = log; this.label = label; this.draw();
  };
  Surface3D.prototype.draw = function () {
    var c = this.c, ctx = c.ctx, b = this.block, g = this.grid;
    ctx.clearRect(0, 0, c.cssW, c.cssH);
    if (!g) return;
    var x = b.x, y = b.y, xr = range(x), yr = range(y), sx = 2 / (xr[1] - xr[0]), sy = 2 / (yr[1] - yr[0]);
    if (b.equal) { sx = sy = 2 / Math.max(xr[1] - xr[0], yr[1] - yr[0]); }
    var s = scaler(this.lo, this.hi, this.log), ca = Math.cos(this.az), sa = Math.sin(this.az), ce = Math.cos(this.el), se = Math.sin(this.el);
    var scale = Math.min(c.cssW, c.cssH) * 0.3 * this.zoom, cx = c.cssW / 2 - 20, cy = c.cssH * 0.58;
    function P(px, py, h) {  // plane coordinates and height in [0, 1] -> screen x, y, depth; model u, v, z
      var u = (px - (xr[0] + xr[1]) / 2) * sx, v = (py - (yr[0] + yr[1]) / 2) * sy, z = h * 1.1;
      var rx = u * ca - v * sa, ry = u * sa + v * ca;
      return [cx + scale * rx, cy - scale * (ry * se + z * ce), -ry * ce + z * se, u, v, z];
    }
    function shade(p) {  // Lambert shading of a quad under a light fixed to the surface
      var ax = p[2][3] - p[0][3], ay = p[2][4] - p[0][4], az = p[2][5] - p[0][5];
      var bx = p[3][3] - p[1][3], by = p[3][4] - p[1][4], bz = p[3][5] - p[1][5];
      var nx = ay * bz - az * by, ny = az * bx - ax * bz, nz = ax * by - ay * bx, n = Math.hypot(nx, ny, nz) || 1;
      return 0.6 + 0.5 * Math.abs((-0.4 * nx - 0.5 * ny + 0.77 * nz) / n);
    }
    var log = this.log;
    function H(v) { return isNum(v) && (!log || v > 0) ? s(v) : null; }
    var quads = [];
    for (var i = 0; i + 1 < x.length; i++) {
      for (var j = 0; j + 1 < y.length; j++) {
        var h = [H(g[i][j]), H(g[i + 1][j]), H(g[i + 1][j + 1]), H(g[i][j + 1])];
        if (h.some(function (v) { return v === null; })) continue;
        var p = [P(x[i], y[j], h[0]), P(x[i + 1], y[j], h[1]), P(x[i + 1], y[j + 1], h[2]), P(x[i], y[j + 1], h[3])];
        quads.push({ p: p, d: (p[0][2] + p[1][2] + p[2][2] + p[3][2]) / 4, h: (h[0] + h[1] + h[2] + h[3]) / 4, l: shade(p) });
      }
    }
    // the floor's frame, then the quads far to near
    var floor = [P(xr[0], yr[0], 0), P(xr[1], yr[0], 0), P(xr[1], yr[1], 0), P(xr[0], yr[1], 0)];
    ctx.strokeStyle = "#aaa"; ctx.lineWidth = 1; ctx.beginPath();
    floor.forEach(function (q, k) { if (k) ctx.lineTo(q[0], q[1]); else ctx.moveTo(q[0], q[1]); });
    ctx.closePath(); ctx.stroke();
    // the box's vertical edges and top, behind the surface: where the heights stand
    var top = [P(xr[0], yr[0], 1), P(xr[1], yr[0], 1), P(xr[1], yr[1], 1), P(xr[0], yr[1], 1)];
    ctx.strokeStyle = "#ccc"; ctx.setLineDash([3, 3]);
    floor.forEach(function (q, k) { ctx.beginPath(); ctx.moveTo(q[0], q[1]); ctx.lineTo(top[k][0], top[k][1]); ctx.stroke(); });
    ctx.beginPath();
    top.forEach(function (q, k) { if (k) ctx.lineTo(q[0], q[1]); else ctx.moveTo(q[0], q[1]); });
    ctx.closePath(); ctx.stroke(); ctx.setLineDash([]);
    quads.sort(function (a, b2) { return a.d - b2.d; });
    ctx.lineWidth = 0.4; ctx.strokeStyle = "rgba(0,0,0,0.25)";
    quads.forEach(function (q) {
      ctx.fillStyle = viridis(q.h, q.l);
      ctx.beginPath(); ctx.moveTo(q.p[0][0], q.p[0][1]);
      for (var k = 1; k < 4; k++) ctx.lineTo(q.p[k][0], q.p[k][1]);
      ctx.closePath(); ctx.fill(); ctx.stroke();
    });
    ctx.fillStyle = "#333"; ctx.font = "11px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    var mx = P((xr[0] + xr[1]) / 2, yr[0], 0), my = P(xr[1], (yr[0] + yr[1]) / 2, 0);
    ctx.fillText("x", mx[0], mx[1] + 12); ctx.fillText("y", my[0] + 12, my[1]);
    ctx.textAlign = "left"; ctx.textBaseline = "top";
    ctx.fillText(this.label + (this.log ? " (log height)" : ""), 8, 6);
    ctx.fillStyle = "#777"; ctx.fillText("drag to turn, wheel to zoom", 8, c.cssH - 18);
    colorbar(ctx, c.cssW - 58, 30, c.cssH - 70, this.lo, this.hi, this.log);
  };

  function planeBlock(node, block) {
    var names = Object.keys(block.quantities);
    if (block.note) node.appendChild(el("p", "note", block.note));
    var controls = el("div", "controls");
    function select(label) {
      var lab = el("label", null, label + " "), s = el("select");
      lab.appendChild(s); controls.appendChild(lab); return s;
    }
    var qsel = select("metric"), ssel = select("split");
    names.forEach(function (q) { var o = el("option", null, block.quantities[q].label); o.value = q; qsel.appendChild(o); });
    var loglab = el("label"), logbox = el("input"); logbox.type = "checkbox";
    loglab.appendChild(logbox); loglab.appendChild(document.createTextNode(" log height"));
    controls.appendChild(loglab);
    var reset = el("button", null, "reset view"); controls.appendChild(reset);
    node.appendChild(controls);
    var panels = el("div", "panels"), c3 = canvas(520, 430, "surface3d"), c2 = canvas(520, 430, "contour");
    [c3, c2].forEach(function (c) { var p = el("div", "panel"); p.appendChild(c); panels.appendChild(p); });
    node.appendChild(panels);
    var leg = [];
    if (block.trajectory) leg.push({ label: block.trajectory_label, color: "#e0245e" });
    if (block.anchors.length) leg.push({ label: (block.curve ? "control points" : "checkpoints") + " (white circles)", color: "#000" });
    if (leg.length) node.appendChild(legend(leg));
    var view = new Surface3D(c3, block);
    function splits() {
      var q = block.quantities[qsel.value], keep = ssel.value;
      ssel.innerHTML = "";
      Object.keys(q.splits).forEach(function (s) { var o = el("option", null, s); o.value = s; ssel.appendChild(o); });
      if (q.splits[keep]) ssel.value = keep;
      ssel.disabled = Object.keys(q.splits).length < 2;
    }
    function draw() {
      var q = block.quantities[qsel.value], grid = q.splits[ssel.value], r = range(flat(grid));
      var positive = r && r[0] > 0;
      logbox.disabled = !positive;
      if (!positive) logbox.checked = false;
      var log = logbox.checked, label = (ssel.value !== "-" ? ssel.value + " " : "") + q.label;
      if (!r) { c2.ctx.clearRect(0, 0, c2.cssW, c2.cssH); c2.ctx.fillText("no values", 20, 20); return; }
      view.set(grid, r[0], r[1], log, label);
      drawContour(c2, block, grid, r[0], r[1], log, label);
    }
    qsel.addEventListener("change", function () { splits(); draw(); });
    ssel.addEventListener("change", draw);
    logbox.addEventListener("change", draw);
    reset.addEventListener("click", function () { view.az = -0.7; view.el = 0.55; view.zoom = 1; view.draw(); });
    splits(); draw();
  }

  function mapsBlock(node, block) {
    node.appendChild(el("div", "cap", block.title));
    var panels = el("div", "panels");
    block.maps.forEach(function (m) {
      var p = el("div", "panel"), c = canvas(340, 300, "map"), r = range(flat(m.values));
      p.appendChild(c); panels.appendChild(p);
      if (!r) { c.ctx.fillText("no values", 20, 20); return; }
      var ex = edges(block.x), ey = edges(block.y);
      var ax = new Axes(c, [ex[0], ex[ex.length - 1]], [ey[0], ey[ey.length - 1]], { right: 64 });
      heat(ax, block.x, block.y, m.values, r[0], r[1], false);
      ax.frame(block.xlabel, block.ylabel, m.label);
      colorbar(c.ctx, c.cssW - 56, ax.m.t, ax.h, r[0], r[1], false);
    });
    node.appendChild(panels);
  }

  var DRAW = { plane: planeBlock, lines: linesBlock, maps: mapsBlock };
  var failed = 0;
  Array.prototype.forEach.call(document.querySelectorAll("div.block[data-block]"), function (node) {
    var block = DATA.sections[+node.dataset.section].blocks[+node.dataset.block];
    try {
      DRAW[block.type](node, block);
    } catch (err) {
      failed++;
      node.appendChild(el("p", "error", "could not draw this " + block.type + " block: " + err));
      console.error(err);
    }
  });
  document.getElementById("status").textContent = failed ? failed + " block(s) could not be drawn" : "";
  document.body.setAttribute("data-rendered", failed ? "failed" : "ok");
})();
