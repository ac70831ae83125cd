// Loss curves on a plain <canvas>: one line per metric against the global step, a log or linear y axis,
// dots where a curve has few points (val_loss: one per epoch). No library.

const COLORS = { train_loss: "#2563eb", val_loss: "#dc2626", train_loss_epoch: "#16a34a" };
const PALETTE = ["#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"];
const FONT = "12px system-ui, sans-serif";

export function colorOf(name, index) {
  return COLORS[name] || PALETTE[index % PALETTE.length];
}

/**
 * Draw `curves` ({name: {step: [...], value: [...]}}) on `canvas`. Returns the points drawn per curve, also
 * left on the canvas as data-points (JSON) for whoever checks what is on screen.
 */
export function drawChart(canvas, curves, { log = true } = {}) {
  const names = Object.keys(curves).filter((n) => curves[n].value.length > 0);
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 640;
  const height = canvas.clientHeight || 300;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = FONT;
  const drawn = {};
  if (!names.length) {
    canvas.dataset.points = "{}";
    return drawn;
  }

  const useLog = log && names.every((n) => curves[n].value.every((v) => v > 0));
  const ty = (v) => (useLog ? Math.log10(v) : v);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const n of names) {
    for (const x of curves[n].step) { if (x < x0) x0 = x; if (x > x1) x1 = x; }
    for (const v of curves[n].value) { const y = ty(v); if (y < y0) y0 = y; if (y > y1) y1 = y; }
  }
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
  const ypad = (y1 - y0) * 0.05;
  y0 -= ypad; y1 += ypad;

  const left = 64, right = 12, top = 10, bottom = 34;
  const pw = width - left - right, ph = height - top - bottom;
  const px = (x) => left + ((x - x0) / (x1 - x0)) * pw;
  const py = (y) => top + (1 - (y - y0) / (y1 - y0)) * ph;

  // grid and axes
  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#6b7280";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of useLog ? logTicks(y0, y1) : ticks(y0, y1, 5)) {
    const y = py(t);
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
    ctx.fillText(number(useLog ? 10 ** t : t), left - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const xticks = ticks(x0, x1, 6, { whole: true }); // steps are whole numbers: never 0.2, 0.4, ...
  for (const t of xticks) {
    const x = px(t);
    ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + ph); ctx.stroke();
    ctx.fillText(number(t), x, top + ph + 6);
  }
  ctx.fillText("step", left + pw / 2, top + ph + 20);
  ctx.strokeStyle = "#9ca3af";
  ctx.strokeRect(left, top, pw, ph);

  // curves
  names.forEach((n, i) => {
    const { step, value } = curves[n];
    ctx.strokeStyle = ctx.fillStyle = colorOf(n, i);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    step.forEach((x, k) => {
      const X = px(x), Y = py(ty(value[k]));
      if (k === 0) ctx.moveTo(X, Y); else ctx.lineTo(X, Y);
    });
    ctx.stroke();
    if (step.length <= 60) {
      step.forEach((x, k) => {
        ctx.beginPath();
        ctx.arc(px(x), py(ty(value[k])), 3, 0, 2 * Math.PI);
        ctx.fill();
      });
    }
    drawn[n] = step.length;
  });
  canvas.dataset.points = JSON.stringify(drawn);
  canvas.dataset.scale = useLog ? "log" : "linear";
  canvas.dataset.xticks = JSON.stringify(xticks);
  return drawn;
}

/** Round positions within [lo, hi], about `count` of them; with `whole`, whole numbers only (a step axis). */
function ticks(lo, hi, count, { whole = false } = {}) {
  const span = hi - lo;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
  if (whole) step = Math.max(1, Math.round(step));
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

/** log10 positions of 1, 2, 5 x 10^k within [lo, hi] (1 x 10^k alone when those are too many). */
function logTicks(lo, hi) {
  const all = [];
  const ones = [];
  for (let e = Math.floor(lo) - 1; e <= Math.ceil(hi); e++) {
    for (const m of [1, 2, 5]) {
      const t = e + Math.log10(m);
      if (t >= lo && t <= hi) {
        all.push(t);
        if (m === 1) ones.push(t);
      }
    }
  }
  if (all.length <= 7) return all.length >= 2 ? all : ticks(lo, hi, 4);
  return ones.length >= 2 ? ones : ticks(lo, hi, 4);
}

export function number(v) {
  if (v == null || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}
