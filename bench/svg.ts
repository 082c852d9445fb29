// Small SVG charts for the benchmark reports, written by hand (no plotting dependency): a line
// chart (optionally with a logarithmic x axis, for "latency vs number of Services") and a grouped
// bar chart (throughput, CPU per GB). Pure functions from data to an SVG string.

export interface Series {
  name: string;
  points: Array<[number, number]>;
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  logX?: boolean;
  series: Series[];
  /** Horizontal reference lines (e.g. the no-Service baseline). */
  refs?: Array<{ name: string; y: number }>;
}

export interface BarChart {
  title: string;
  yLabel: string;
  groups: string[];
  series: Array<{ name: string; values: Array<number | undefined> }>;
}

const W = 720;
const H = 400;
const M = { left: 70, right: 190, top: 40, bottom: 60 };
export const COLORS = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02', '#a6761d', '#666666'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** About five round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart), the last >= hi. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  // the last tick is at or above hi: charts use it as the top of the axis
  const top = Math.ceil(hi / step - 1e-9) * step;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= top + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export function formatTick(v: number): string {
  if (v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3)) {
    if (Math.abs(v) >= 1e4 && v % 1000 === 0) return `${(v / 1000).toLocaleString('en-US')}k`;
    return v.toExponential(0);
  }
  return Number(v.toPrecision(4)).toLocaleString('en-US');
}

function frame(title: string, xLabel: string, yLabel: string, body: string[]): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${M.left + pw / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="${M.left + pw / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(xLabel)}</text>`,
    `<text transform="translate(16 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(yLabel)}</text>`,
    ...body,
    `<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`,
    '</svg>',
    '',
  ].join('\n');
}

function legend(names: string[], dashed: Set<string> = new Set()): string[] {
  const x = W - M.right + 15;
  return names.flatMap((n, i) => {
    const y = M.top + 10 + i * 20;
    const c = dashed.has(n) ? '#000' : COLORS[i % COLORS.length];
    const dash = dashed.has(n) ? ' stroke-dasharray="6 4"' : '';
    return [
      `<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${c}" stroke-width="3"${dash}/>`,
      `<text x="${x + 28}" y="${y + 4}">${escapeXml(n)}</text>`,
    ];
  });
}

export function lineChart(c: LineChart): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const xs = c.series.flatMap((s) => s.points.map((p) => p[0])).filter((x) => Number.isFinite(x));
  const ys = [...c.series.flatMap((s) => s.points.map((p) => p[1])), ...(c.refs ?? []).map((r) => r.y)].filter((y) =>
    Number.isFinite(y),
  );
  if (xs.length === 0 || ys.length === 0) return frame(c.title, c.xLabel, c.yLabel, []);
  const tx = (x: number): number => (c.logX ? Math.log10(x) : x);
  let x0 = Math.min(...xs.map(tx));
  let x1 = Math.max(...xs.map(tx));
  if (x1 === x0) {
    x0 -= 0.5;
    x1 += 0.5;
  }
  const yTicks = niceTicks(0, Math.max(...ys) * 1.1);
  const y1 = yTicks[yTicks.length - 1] || 1;
  const px = (x: number): number => M.left + ((tx(x) - x0) / (x1 - x0)) * pw;
  const py = (y: number): number => M.top + ph - (y / y1) * ph;
  const body: string[] = [];
  for (const t of yTicks) {
    body.push(`<line x1="${M.left}" y1="${py(t)}" x2="${M.left + pw}" y2="${py(t)}" stroke="#ddd"/>`);
    body.push(`<text x="${M.left - 6}" y="${py(t) + 4}" text-anchor="end">${formatTick(t)}</text>`);
  }
  const xTicks = [...new Set(xs)].sort((a, b) => a - b);
  for (const t of xTicks) {
    body.push(`<line x1="${px(t)}" y1="${M.top + ph}" x2="${px(t)}" y2="${M.top + ph + 5}" stroke="#333"/>`);
    body.push(`<text x="${px(t)}" y="${M.top + ph + 18}" text-anchor="middle">${formatTick(t)}</text>`);
  }
  for (const r of c.refs ?? [])
    body.push(
      `<line x1="${M.left}" y1="${py(r.y)}" x2="${M.left + pw}" y2="${py(r.y)}" stroke="#000" stroke-dasharray="6 4"/>`,
    );
  c.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    if (pts.length === 0) return;
    body.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${pts.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ')}"/>`,
    );
    for (const p of pts)
      body.push(`<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="4" fill="${color}"/>`);
  });
  const refNames = (c.refs ?? []).map((r) => r.name);
  body.push(...legend([...c.series.map((s) => s.name), ...refNames], new Set(refNames)));
  return frame(c.title, c.xLabel, c.yLabel, body);
}

export function barChart(c: BarChart): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const vals = c.series.flatMap((s) => s.values).filter((v): v is number => v !== undefined && Number.isFinite(v));
  const yTicks = niceTicks(0, Math.max(0, ...vals) * 1.1 || 1);
  const y1 = yTicks[yTicks.length - 1] || 1;
  const py = (y: number): number => M.top + ph - (y / y1) * ph;
  const body: string[] = [];
  for (const t of yTicks) {
    body.push(`<line x1="${M.left}" y1="${py(t)}" x2="${M.left + pw}" y2="${py(t)}" stroke="#ddd"/>`);
    body.push(`<text x="${M.left - 6}" y="${py(t) + 4}" text-anchor="end">${formatTick(t)}</text>`);
  }
  const gw = pw / Math.max(1, c.groups.length);
  const bw = (gw * 0.8) / Math.max(1, c.series.length);
  c.groups.forEach((g, gi) => {
    const gx = M.left + gi * gw;
    body.push(`<text x="${gx + gw / 2}" y="${M.top + ph + 18}" text-anchor="middle">${escapeXml(g)}</text>`);
    c.series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === undefined || !Number.isFinite(v)) return;
      const x = gx + gw * 0.1 + si * bw;
      body.push(
        `<rect x="${x.toFixed(1)}" y="${py(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(M.top + ph - py(v)).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"><title>${escapeXml(`${s.name}, ${g}: ${formatTick(v)}`)}</title></rect>`,
      );
    });
  });
  body.push(...legend(c.series.map((s) => s.name)));
  return frame(c.title, '', c.yLabel, body);
}
