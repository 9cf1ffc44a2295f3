// A live time chart (uPlot), sized to its container, coloured for the
// theme, with the latest value in words for screen readers.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { useEffect, useRef } from 'preact/hooks';

import { useDark } from '../hooks';
import type { Series } from '../metrics';

/** The seconds a chart shows. */
export const WINDOW_S = 300;

/** Seconds since the epoch as local HH:MM. */
function clock(s: number): string {
  const d = new Date(s * 1000);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

export interface Line {
  label: string;
  color: string;
}

export function TimeChart({
  title,
  series,
  lines,
  version,
  format,
  max,
}: {
  title: string;
  series: Series;
  lines: Line[];
  /** Changes when `series` got a new point. */
  version: number;
  format: (v: number) => string;
  /** Fixed top of the y axis (1 for fractions); auto when absent. */
  max?: number;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const dark = useDark();

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const axis = dark ? '#a9b1bb' : '#4b5563';
    const grid = dark ? 'rgba(255,255,255,0.08)' : 'rgba(0,0,0,0.08)';
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: 160,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        // A rolling window of the last WINDOW_S seconds.
        x: {
          time: true,
          range: (_u, _lo, hi) => {
            const end = Number.isFinite(hi) ? hi : Date.now() / 1000;
            return [end - WINDOW_S, end];
          },
        },
        y: max !== undefined ? { range: [0, max] } : { range: (_u, _lo, hi) => [0, hi > 0 ? hi * 1.15 : 1] } },
      axes: [
        {
          stroke: axis,
          grid: { stroke: grid },
          ticks: { stroke: grid },
          values: (_u, vals) => vals.map((v) => clock(v)),
        },
        {
          stroke: axis,
          grid: { stroke: grid },
          ticks: { stroke: grid },
          size: 70,
          values: (_u, vals) => vals.map((v) => format(v)),
        },
      ],
      series: [
        {},
        ...lines.map((l) => ({
          label: l.label,
          stroke: l.color,
          width: 2,
          fill: l.color + '22',
        })),
      ],
    };
    const u = new uPlot(opts, series.data() as uPlot.AlignedData, el);
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height: 160 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [lines.map((l) => l.label).join('|'), max, dark]);

  useEffect(() => {
    plot.current?.setData(series.data() as uPlot.AlignedData);
  }, [version, series]);

  const latest = lines.map((l, i) => {
    const v = series.last(i);
    return `${l.label} ${v === null ? 'not known yet' : format(v)}`;
  });
  return (
    <figure class="chart">
      <figcaption>
        <span class="chart-title">{title}</span>
        <span class="chart-latest" aria-live="off">
          {latest.join(' · ')}
        </span>
      </figcaption>
      <div class="chart-plot" ref={box} role="img" aria-label={`${title}: ${latest.join(', ')}`} />
    </figure>
  );
}
