// lomo chart components, on uPlot (vendored in vendor/, see web/embed.go):
// the live dashboard (app.js) and the fine-tuning page (web/finetune) draw
// with them. Load vendor/uPlot.iife.min.js first; this file defines
// window.lomoCharts:
//
//   new lomoCharts.Chart(el, series, opts)  a step-indexed line chart in el
//       .setData([x, y1, y2, ...], points)  draw; el gets data-points=points
//   new lomoCharts.MemoryChart(el)          live and peak device memory by tag (MiB)
//       .push(memory)  one step's {tag: {live, peak}} bytes (tags may appear late)
//       .truncate(n)   keep the first n steps
//       .draw(x)       draw against the steps x
//   lomoCharts.num(v)   v if a finite number, else null (a gap)
//   lomoCharts.fmtNum   short axis labels
//   lomoCharts.palette
(function () {
  'use strict';

  const palette = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];
  const MIB = 1024 * 1024;
  const HEIGHT = 220;
  const all = new Set();

  function num(v) {
    return typeof v === 'number' && isFinite(v) ? v : null;
  }

  function chartWidth(el) {
    return Math.max(300, (el.clientWidth || el.parentElement.clientWidth || 440) - 4);
  }

  // Axis labels: short and distinct for tiny learning rates and huge loss
  // scales alike.
  function fmtNum(v) {
    if (v === null || v === undefined) return '';
    const a = Math.abs(v);
    if (a === 0) return '0';
    if (a >= 1e9) return +(v / 1e9).toPrecision(3) + 'G';
    if (a >= 1e6) return +(v / 1e6).toPrecision(3) + 'M';
    if (a >= 1e4) return +(v / 1e3).toPrecision(3) + 'k';
    if (a < 1e-2) return v.toExponential(1).replace('.0e', 'e');
    return String(+v.toPrecision(3));
  }
  const yValues = (u, splits) => splits.map(fmtNum);

  class Chart {
    constructor(el, series, opts) {
      this.el = el;
      this.opts = opts || {};
      this.u = null;
      this.build(series);
      all.add(this);
    }

    build(series) {
      if (this.u) {
        this.u.destroy();
        this.el.textContent = '';
      }
      const o = Object.assign({
        width: chartWidth(this.el),
        height: HEIGHT,
        legend: { show: true },
        cursor: { drag: { x: true, y: false } },
        scales: { x: { time: false } },
        axes: [{ label: 'step' }, {}],
        series: [{ label: 'step' }].concat(series),
      }, this.opts);
      o.series = [{ label: 'step' }].concat(series);
      o.axes = o.axes.map((a, i) => (i > 0 && !a.values ? Object.assign({ values: yValues, size: 56 }, a) : a));
      this.u = new uPlot(o, [[]].concat(series.map(() => [])), this.el);
    }

    setData(data, points) {
      this.u.setData(data);
      this.el.setAttribute('data-points', String(points));
    }

    resize() {
      this.u.setSize({ width: chartWidth(this.el), height: HEIGHT });
    }

    destroy() {
      all.delete(this);
      this.u.destroy();
      this.el.textContent = '';
    }
  }

  class MemoryChart {
    constructor(el) {
      this.tags = [];
      this.mem = new Map(); // tag -> {live: [], peak: []}, MiB per step
      this.n = 0;
      this.dirty = false;
      this.chart = new Chart(el, []);
    }

    push(memory) {
      memory = memory || {};
      for (const tag of Object.keys(memory).sort()) {
        if (!this.mem.has(tag)) {
          this.mem.set(tag, { live: new Array(this.n).fill(null), peak: new Array(this.n).fill(null) });
          this.tags.push(tag);
          this.dirty = true;
        }
      }
      for (const [tag, m] of this.mem) {
        const v = memory[tag];
        m.live.push(v ? v.live / MIB : null);
        m.peak.push(v ? v.peak / MIB : null);
      }
      this.n++;
    }

    truncate(n) {
      for (const m of this.mem.values()) { m.live.length = n; m.peak.length = n; }
      this.n = Math.min(this.n, n);
    }

    draw(x) {
      if (this.dirty) {
        this.dirty = false;
        const series = [];
        this.tags.forEach((tag, i) => {
          const c = palette[i % palette.length];
          series.push({ label: tag + ' live', stroke: c, width: 1.5 });
          series.push({ label: tag + ' peak', stroke: c, width: 1, dash: [4, 4] });
        });
        this.chart.build(series);
      }
      const data = [x];
      for (const tag of this.tags) {
        const m = this.mem.get(tag);
        data.push(m.live, m.peak);
      }
      this.chart.setData(data, x.length);
    }
  }

  window.addEventListener('resize', () => {
    for (const c of all) c.resize();
  });

  window.lomoCharts = { Chart, MemoryChart, num, fmtNum, palette };
})();
