// Small SVG line charts: a fixed time window, one or two series, a rounded y scale.

const SVG = "http://www.w3.org/2000/svg";
const W = 240;
const H = 110;
const PAD = { left: 34, right: 4, top: 8, bottom: 18 };

function el(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  parent?.appendChild(node);
  return node;
}

/** 1, 2, 5 × 10^n at or above `value`, so the axis labels stay readable. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function format(value, digits) {
  if (value === null || value === undefined) return "–";
  if (digits !== undefined) return value.toFixed(digits);
  if (value >= 100 || Number.isInteger(value)) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export class LineChart {
  /** `figure` holds an <svg> and an <output class="now">; `series` are the point keys drawn. */
  constructor(figure, { series, windowMs, describe, digits, unit = "" }) {
    this.figure = figure;
    this.svg = figure.querySelector("svg");
    this.now = figure.querySelector(".now");
    this.series = series;
    this.windowMs = windowMs;
    this.describe = describe;
    this.unit = unit;
    this.digits = digits;
  }

  /** Redraw from `points` ([{at, key: value|null}]), the newest last. */
  draw(points, end = Date.now()) {
    const start = end - this.windowMs;
    const shown = points.filter((p) => p.at >= start);
    let top = 0;
    for (const p of shown) for (const key of this.series) top = Math.max(top, p[key] ?? 0);
    top = niceMax(top);
    this.svg.replaceChildren();
    const x = (at) => PAD.left + ((at - start) / this.windowMs) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
    for (const fraction of [0, 0.5, 1]) {
      const v = top * fraction;
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }, this.svg);
      const label = el("text", { x: PAD.left - 4, y: y(v) + 3, class: "tick" }, this.svg);
      label.textContent = format(v);
    }
    const axis = el("text", { x: W - PAD.right, y: H - 3, class: "tick end" }, this.svg);
    axis.textContent = "now";
    const past = el("text", { x: PAD.left, y: H - 3, class: "tick start" }, this.svg);
    past.textContent = `−${Math.round(this.windowMs / 1000)} s`;
    this.series.forEach((key, i) => {
      // Missing values (no requests in an interval) break the line instead of drawing zeros.
      let d = "";
      let pen = "M";
      for (const p of shown) {
        const v = p[key];
        if (v === null || v === undefined) {
          pen = "M";
          continue;
        }
        d += `${pen}${x(p.at).toFixed(1)},${y(v).toFixed(1)}`;
        pen = "L";
      }
      if (d) el("path", { d, class: `line s${i + 1}` }, this.svg);
    });
    const last = shown.at(-1);
    const values = last ? this.series.map((key) => format(last[key], this.digits)) : [];
    this.now.textContent = last ? values.join(" / ") + this.unit : "–";
    this.figure.dataset.points = String(shown.length);
    this.figure.dataset.last = last ? String(last[this.series[0]] ?? "") : "";
    this.svg.setAttribute("aria-label", last ? this.describe(last) : `${this.describe(null)}`);
  }
}
