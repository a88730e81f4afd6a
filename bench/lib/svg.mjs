// Owns the report's charts, written as plain SVG text (no dependency): grouped horizontal bar
// charts (throughput per target) and percentile curves (latency distribution per target).

const FONT = 'font-family="system-ui, sans-serif"';
/** One colour per target, the same in every chart; unknown series take the rest in order. */
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1'];

const esc = (s) =>
  String(s)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');
const num = (v) => (Math.round(v * 10) / 10).toString();

/** 12345 -> "12.3k", 0.5 -> "0.5": short axis and bar labels. */
export function shortNumber(v) {
  if (v == null || !Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(a >= 1e4 ? 0 : 1)}k`;
  if (a >= 10) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

function legend(series, x, y) {
  return series
    .map(
      (s, i) =>
        `<rect x="${x + i * 150}" y="${y - 10}" width="12" height="12" fill="${s.color}"/>` +
        `<text x="${x + i * 150 + 17}" y="${y}" font-size="12" ${FONT}>${esc(s.name)}</text>`,
    )
    .join('');
}

const withColors = (series) =>
  series.map((s, i) => ({ ...s, color: s.color ?? PALETTE[i % PALETTE.length] }));

/**
 * Grouped horizontal bars: `groups` are the row labels, each `series` ({ name, values, color? })
 * one bar per group (null: no bar, "n/a"). Returns SVG text.
 */
export function barChart({ title, unit, groups, series }) {
  const s = withColors(series);
  const labelW = 260;
  const plotW = 440;
  const barH = 14;
  const groupGap = 12;
  const top = 56;
  const groupH = s.length * barH + groupGap;
  const height = top + groups.length * groupH + 34;
  const width = labelW + plotW + 90;
  const max = Math.max(1e-9, ...s.flatMap((x) => x.values.filter((v) => v != null && Number.isFinite(v))));
  const scale = (v) => (v / max) * plotW;
  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold" ${FONT}>${esc(title)}</text>`,
    legend(s, 10, 42),
  );
  for (let t = 0; t <= 4; t++) {
    const x = labelW + (plotW * t) / 4;
    out.push(
      `<line x1="${num(x)}" y1="${top - 4}" x2="${num(x)}" y2="${height - 30}" stroke="#ddd"/>`,
      `<text x="${num(x)}" y="${height - 16}" font-size="11" text-anchor="middle" ${FONT}>${shortNumber((max * t) / 4)}</text>`,
    );
  }
  out.push(
    `<text x="${labelW + plotW / 2}" y="${height - 3}" font-size="11" text-anchor="middle" ${FONT}>${esc(unit)}</text>`,
  );
  groups.forEach((g, gi) => {
    const y0 = top + gi * groupH;
    out.push(
      `<text x="${labelW - 8}" y="${num(y0 + (s.length * barH) / 2 + 4)}" font-size="12" text-anchor="end" ${FONT}>${esc(g)}</text>`,
    );
    s.forEach((x, si) => {
      const v = x.values[gi];
      const y = y0 + si * barH;
      if (v == null || !Number.isFinite(v)) {
        out.push(`<text x="${labelW + 4}" y="${y + barH - 3}" font-size="10" fill="#888" ${FONT}>n/a</text>`);
        return;
      }
      const w = Math.max(1, scale(v));
      out.push(
        `<rect x="${labelW}" y="${y}" width="${num(w)}" height="${barH - 2}" fill="${x.color}"><title>${esc(`${x.name}: ${v}`)}</title></rect>`,
        `<text x="${num(labelW + w + 4)}" y="${y + barH - 3}" font-size="10" ${FONT}>${shortNumber(v)}</text>`,
      );
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** Percentile p (0..100) on the "nines" axis: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3, 99.99 → 4. */
const nines = (p) => Math.log10(100 / Math.max(100 - p, 0.001));

/**
 * Latency percentile curves: each series ({ name, curve: [[percentile, µs]], color? }) one line,
 * percentiles on a "nines" x axis (50, 90, 99, 99.9, 99.99), latency on a log y axis in ms.
 */
export function percentileChart({ title, series }) {
  const s = withColors(series).filter((x) => x.curve?.length > 0);
  const width = 720;
  const height = 380;
  const left = 64;
  const right = 20;
  const top = 56;
  const bottom = 48;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const xMax = 4.3; // a little past 99.99 so that point and p100 (drawn at 99.995) fit
  const values = s.flatMap((x) => x.curve.map(([, us]) => us)).filter((v) => v > 0);
  const lo = Math.floor(Math.log10(Math.min(...values, 1e9) / 1000));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...values, 1) / 1000)));
  const xs = (p) => left + (Math.min(nines(p), xMax) / xMax) * plotW;
  const ys = (us) => top + plotH - ((Math.log10(Math.max(us, 1) / 1000) - lo) / (hi - lo)) * plotH;
  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold" ${FONT}>${esc(title)}</text>`,
    legend(s, 10, 42),
  );
  for (const p of [0, 50, 90, 99, 99.9, 99.99]) {
    const x = xs(p);
    out.push(
      `<line x1="${num(x)}" y1="${top}" x2="${num(x)}" y2="${top + plotH}" stroke="#ddd"/>`,
      `<text x="${num(x)}" y="${top + plotH + 16}" font-size="11" text-anchor="middle" ${FONT}>p${p}</text>`,
    );
  }
  for (let d = lo; d <= hi; d++) {
    const y = ys(1000 * 10 ** d);
    const label = d >= 0 ? String(10 ** d) : (10 ** d).toFixed(-d);
    out.push(
      `<line x1="${left}" y1="${num(y)}" x2="${left + plotW}" y2="${num(y)}" stroke="#ddd"/>`,
      `<text x="${left - 6}" y="${num(y + 4)}" font-size="11" text-anchor="end" ${FONT}>${label}</text>`,
    );
  }
  out.push(
    `<text x="${left + plotW / 2}" y="${height - 8}" font-size="11" text-anchor="middle" ${FONT}>percentile</text>`,
    `<text x="14" y="${top + plotH / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 14 ${top + plotH / 2})" ${FONT}>latency (ms, log scale)</text>`,
  );
  for (const x of s) {
    const at = x.curve.map(([p, us]) => [xs(p === 100 ? 99.995 : p), ys(us)]);
    const tip = x.curve.map(([p, us]) => `p${p} ${(us / 1000).toFixed(3)} ms`).join(', ');
    out.push(
      `<polyline points="${at.map(([a, b]) => `${num(a)},${num(b)}`).join(' ')}" fill="none" stroke="${x.color}" stroke-width="2"><title>${esc(`${x.name}: ${tip}`)}</title></polyline>`,
      `<path d="${at.map(([a, b]) => `M${num(a)} ${num(b)}h0`).join('')}" stroke="${x.color}" stroke-width="5" stroke-linecap="round"/>`,
    );
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
