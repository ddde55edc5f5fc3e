// lomo fine-tuning page: runs lomo's WASM build (cmd/wasm) in this tab and
// drives its global `lomo` object; draws with the dashboard's chart
// components (../charts.js). Events follow the monitor schema
// (monitor/events.go): non-finite numbers arrive as "NaN"/"Inf" strings and
// are shown as such, never as zeros; a figure not measured yet shows "—".
//
// URL parameters: autostart=1 starts a run once lomo is ready; steps=N sets
// max_steps; token=T is the hub's token for publishing.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const { Chart, MemoryChart, num, palette } = window.lomoCharts;
  const t0 = performance.now();

  // What the page measured and showed, for people and for tests.
  const page = window.lomoPage = {
    timings: {}, // ms since navigation: wasm, ready, start, zero_shot, first_step, end
    evals: [], steps: [], summary: null, errors: [], model: null, device: null, run: null,
  };
  const mark = (k) => { if (page.timings[k] === undefined) page.timings[k] = Math.round(performance.now()); };

  // ---- status, errors, log ---------------------------------------------

  function setStatus(text, cls) {
    $('status').textContent = text;
    $('status').className = 'status ' + (cls || '');
  }

  function showError(err) {
    const msg = (err && err.message) || String(err);
    page.errors.push({ code: (err && err.code) || 'error', message: msg });
    const el = $('error');
    el.hidden = false;
    el.textContent = msg;
    log('error: ' + msg);
  }
  function clearError() {
    $('error').hidden = true;
    $('error').textContent = '';
  }

  const logEl = $('log');
  function log(text) {
    logEl.textContent += text + '\n';
    logEl.scrollTop = logEl.scrollHeight;
  }
  if (globalThis.fs && globalThis.fs.memfs) globalThis.fs.memfs.onOutput = (fd, text) => log(text);

  // ---- lomo, with every call settled ------------------------------------

  // Calls in flight: if the Go program exits (a crash), each is rejected, so
  // that no button waits forever.
  const pending = new Set();
  let exited = null;
  function call(name, ...args) {
    if (exited) return Promise.reject(exited);
    return new Promise((resolve, reject) => {
      const p = { reject };
      pending.add(p);
      let r;
      try {
        r = globalThis.lomo[name](...args);
      } catch (e) {
        pending.delete(p);
        reject(e);
        return;
      }
      Promise.resolve(r).then(resolve, reject).finally(() => pending.delete(p));
    });
  }

  async function start() {
    if (!navigator.gpu) {
      setStatus('no WebGPU', 'down');
      showError(Object.assign(new Error('No WebGPU: this browser does not offer WebGPU (navigator.gpu is missing), so lomo cannot run here. ' +
        'Use Chrome or Edge 113 or later, Safari 26, or Firefox 141 on Windows; Chromium on Linux needs --enable-unsafe-webgpu. ' +
        'A page served over plain http from another host than localhost is not a secure context and gets no WebGPU either.'), { code: 'no-webgpu' }));
      return;
    }
    const go = new Go();
    let result;
    try {
      const resp = await fetch('lomo.wasm');
      if (!resp.ok) throw new Error(`lomo.wasm: ${resp.status} ${resp.statusText}: the WASM build is missing (build it with \`just wasm\`)`);
      result = await WebAssembly.instantiateStreaming(resp, go.importObject);
    } catch (e) {
      setStatus('error', 'down');
      showError(e);
      return;
    }
    mark('wasm');
    globalThis.wasm = result; // the WebGPU binding reads WASM memory through it
    const ready = new Promise((res) => window.addEventListener('lomo-ready', res, { once: true }));
    go.run(result.instance).then(() => {
      exited = new Error('lomo stopped (the WASM program exited; see the log): reload the page');
      for (const p of pending) p.reject(exited);
      pending.clear();
      setStatus('stopped', 'down');
      showError(exited);
      setButtons();
    });
    await ready;
    mark('ready');
    globalThis.lomo.on('*', onEvent);
    setStatus('opening the device');
    const slow = setTimeout(() => log('the WebGPU device has not answered in 30 s: the browser may be busy, or its GPU process stuck'), 30_000);
    try {
      page.device = await call('device');
      showDevice(page.device);
    } catch (e) {
      setStatus(e.code === 'no-webgpu' ? 'no WebGPU' : 'error', 'down');
      showError(e);
      return;
    } finally {
      clearTimeout(slow);
    }
    setStatus('ready', 'live');
    state.ready = true;
    setButtons();
    if (params.get('autostart') === '1') startRun();
  }

  // ---- adapter and model -----------------------------------------------

  function fmtBytes(n) {
    if (typeof n !== 'number') return '—';
    if (n >= 1 << 30) return +(n / (1 << 30)).toPrecision(4) + ' GiB';
    if (n >= 1 << 20) return +(n / (1 << 20)).toPrecision(4) + ' MiB';
    if (n >= 1 << 10) return +(n / (1 << 10)).toPrecision(4) + ' KiB';
    return n + ' B';
  }

  function fillTable(id, rows) {
    const body = $(id).tBodies[0];
    body.textContent = '';
    for (const [k, v] of rows) {
      const tr = body.insertRow();
      const th = document.createElement('th');
      th.textContent = k;
      tr.appendChild(th);
      tr.insertCell().textContent = v;
    }
  }

  function showDevice(d) {
    const caps = Object.entries(d.caps || {}).filter(([, v]) => v).map(([k]) => k);
    $('adapter').textContent = `${d.name} (${d.type}, ${d.backend}${d.software ? ', software' : ''})` +
      (caps.length ? ' · ' + caps.join(', ') : '');
    const l = d.limits || {};
    fillTable('limits', [
      ['max buffer', fmtBytes(l.max_buffer_size)],
      ['max storage binding', fmtBytes(l.max_storage_buffer_binding_size)],
      ['storage buffers per stage', String(l.max_storage_buffers_per_stage)],
      ['workgroup storage', fmtBytes(l.max_compute_workgroup_storage_size)],
      ['invocations per workgroup', String(l.max_compute_invocations_per_workgroup)],
      ['features', (d.features || []).join(', ') || 'none'],
    ]);
  }

  function showModel(m) {
    page.model = m;
    fillTable('model-info', [
      ['model', m.name],
      ['parameters', m.params.toLocaleString('en')],
      ['layers · hidden · heads', `${m.layers} · ${m.hidden} · ${m.heads}`],
      ['vocabulary', String(m.vocab)],
      ['dtype', `${m.dtype} on the device (${m.file_dtype || '?'} in the file)`],
    ]);
    $('gen-before').textContent = '—';
    $('gen-after').textContent = '—';
  }

  async function loadModel(files) {
    clearError();
    state.busy = 'load';
    setButtons();
    setStatus('loading the model');
    try {
      showModel(await call('load', files));
      state.loaded = true;
      state.tuned = false;
      setStatus('ready', 'live');
    } catch (e) {
      setStatus('error', 'down');
      showError(e);
    } finally {
      state.busy = '';
      setButtons();
    }
  }

  // ---- charts ----------------------------------------------------------

  const charts = {
    loss: new Chart($('loss-chart'), [{ label: 'loss', stroke: palette[0], width: 1.5, spanGaps: false }]),
    acc: new Chart($('acc-chart'), [{ label: 'accuracy', stroke: palette[2], width: 1.5, points: { show: true, size: 7 } }],
      { scales: { x: { time: false }, y: { range: [0, 1] } } }),
    tps: new Chart($('tps-chart'), [{ label: 'tokens/s', stroke: palette[5], width: 1.5 }]),
  };
  let memChart = new MemoryChart($('mem-chart'));

  const state = { ready: false, loaded: false, busy: '', tuned: false, run: newRun() };
  function newRun() {
    return { x: [], loss: [], tps: [], accX: [], acc: [], zeroShot: null, final: null, metric: '', task: '' };
  }

  let drawTimer = null;
  function scheduleDraw() {
    if (drawTimer === null) drawTimer = setTimeout(draw, 40);
  }
  function draw() {
    drawTimer = null;
    const r = state.run;
    charts.loss.setData([r.x, r.loss], r.loss.filter((v) => v !== null).length);
    charts.acc.setData([r.accX, r.acc], r.acc.filter((v) => v !== null).length);
    charts.tps.setData([r.x, r.tps], r.tps.filter((v) => v !== null).length);
    memChart.draw(r.x);
  }

  // A figure as shown: non-finite values by name, never as 0.
  function fmtValue(v, digits) {
    if (typeof v === 'number' && isFinite(v)) return v.toFixed(digits);
    if (v === null || v === undefined) return '—';
    return String(v);
  }

  function showResults() {
    const r = state.run;
    $('task-name').textContent = r.task ? `${r.task} (${r.metric})` : '—';
    $('zero-shot').textContent = r.zeroShot === null ? '—' : fmtValue(r.zeroShot, 3);
    $('finetuned').textContent = r.final === null ? '—' : fmtValue(r.final, 3);
    $('steps').textContent = r.x.length ? String(r.x[r.x.length - 1]) : '—';
    const fin = r.loss.filter((v) => v !== null);
    $('loss-range').textContent = r.x.length ? `${fmtValue(page.steps[0].loss, 3)} → ${fmtValue(page.steps[page.steps.length - 1].loss, 3)}` : '—';
    if (!fin.length && r.x.length) $('loss-range').textContent += ' (no finite loss)';
  }

  // ---- events (monitor schema) -----------------------------------------

  function onEvent(ev) {
    const r = state.run;
    switch (ev.kind) {
      case 'step': {
        const st = ev.step;
        if (!page.steps.length) {
          mark('first_step');
          $('first-step').textContent = `${((page.timings.first_step - page.timings.start) / 1000).toFixed(1)} s after Start` +
            ` (${(page.timings.first_step / 1000).toFixed(1)} s after the page opened)`;
        }
        page.steps.push({ step: st.step, loss: st.loss, tokens_per_sec: st.tokens_per_sec });
        r.x.push(st.step);
        r.loss.push(num(st.loss));
        r.tps.push(num(st.tokens_per_sec));
        memChart.push(st.memory);
        $('run-state').textContent = `step ${st.step}` + ` · loss ${fmtValue(st.loss, 4)}`;
        break;
      }
      case 'eval': {
        const e = ev.eval;
        page.evals.push(e);
        r.task = e.task;
        r.metric = e.metric;
        r.accX.push(e.step);
        r.acc.push(num(e.value));
        if (e.zero_shot) {
          r.zeroShot = e.value;
          mark('zero_shot');
        } else {
          r.final = e.value;
        }
        break;
      }
      case 'sample':
        log(`sample at step ${ev.sample.step}: ${JSON.stringify(ev.sample.text)}`);
        break;
      case 'run':
        page.run = ev.run_info;
        log(`run ${ev.run}: ${ev.run_info.optimizer}, ${ev.run_info.params.toLocaleString('en')} parameters on ${ev.run_info.adapter}`);
        break;
      case 'end':
        log(`run ended: ${ev.end.reason}${ev.end.err ? ' (' + ev.end.err + ')' : ''}`);
        break;
    }
    showResults();
    scheduleDraw();
  }

  // ---- training ----------------------------------------------------------

  // parseConfig reads `key: value` lines (YAML scalars; # comments).
  function parseConfig(text) {
    const cfg = {};
    text.split('\n').forEach((line, i) => {
      const l = line.replace(/(^|\s)#.*$/, '').trim();
      if (!l) return;
      const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$/.exec(l);
      if (!m) throw new Error(`config line ${i + 1}: want "key: value", got ${JSON.stringify(line)}`);
      cfg[m[1]] = m[2].replace(/^(["'])(.*)\1$/, '$2');
    });
    return cfg;
  }

  function hubURL() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/publish';
  }
  $('hub-url').value = hubURL();

  async function startRun() {
    if (state.busy) return;
    clearError();
    let cfg;
    try {
      cfg = parseConfig($('config').value);
    } catch (e) {
      showError(e);
      return;
    }
    if (params.get('steps')) cfg.max_steps = params.get('steps');
    const file = $('train-file').files[0];
    if (file) cfg.train_file = file;
    const opts = { run: 'browser', task: { train: Number($('task-train').value), eval: Number($('task-eval').value) } };
    if ($('publish').checked) {
      opts.publish = $('hub-url').value;
      opts.token = params.get('token') || '';
      $('dashboard-link').href = '../?run=' + opts.run + (opts.token ? '&token=' + encodeURIComponent(opts.token) : '');
    }
    state.busy = 'train';
    setButtons();
    state.run = newRun();
    page.steps = [];
    page.evals = [];
    page.summary = null;
    delete page.timings.first_step;
    delete page.timings.zero_shot;
    delete page.timings.end;
    memChart.chart.destroy();
    memChart = new MemoryChart($('mem-chart'));
    $('first-step').textContent = '—';
    $('downloads').textContent = '';
    showResults();
    draw();
    page.timings.start = Math.round(performance.now());
    try {
      if (!state.loaded) {
        setStatus('loading the model');
        showModel(await call('load'));
        state.loaded = true;
      }
      if ($('gen-before').textContent === '—') {
        setStatus('generating (before)');
        $('gen-before').textContent = await generateText();
      }
      setStatus('training', 'live');
      $('run-state').textContent = 'zero-shot evaluation, then training';
      const s = await call('train', cfg, opts);
      page.summary = s;
      state.tuned = true;
      mark('end');
      $('run-state').textContent = `${s.stopped ? 'stopped' : 'done'} after ${s.steps} steps, ${fmtValue(s.tokens_per_sec, 0)} tokens/s`;
      setStatus('generating (after)', 'live');
      state.busy = 'generate';
      $('gen-after').textContent = await generateText();
      setStatus('done', 'live');
    } catch (e) {
      setStatus('error', 'down');
      $('run-state').textContent = 'failed';
      showError(e);
    } finally {
      state.busy = '';
      setButtons();
      showResults();
      scheduleDraw();
    }
  }

  async function generateText() {
    const max = Number($('max-new').value);
    const temp = Number($('temperature').value);
    return call('generate', $('prompt').value, { maxNewTokens: max, temperature: temp });
  }

  async function onGenerate() {
    clearError();
    state.busy = 'generate';
    setButtons();
    const out = state.tuned ? $('gen-after') : $('gen-before');
    try {
      out.textContent = await generateText();
    } catch (e) {
      showError(e);
    } finally {
      state.busy = '';
      setButtons();
    }
  }

  async function onSave() {
    clearError();
    state.busy = 'save';
    setButtons();
    try {
      const files = await call('save');
      const ul = $('downloads');
      ul.textContent = '';
      for (const f of files) {
        const a = document.createElement('a');
        a.href = URL.createObjectURL(f);
        a.download = f.name;
        a.textContent = `${f.name} (${fmtBytes(f.size)})`;
        const li = document.createElement('li');
        li.appendChild(a);
        ul.appendChild(li);
      }
      page.saved = files.map((f) => ({ name: f.name, size: f.size }));
    } catch (e) {
      showError(e);
    } finally {
      state.busy = '';
      setButtons();
    }
  }

  function setButtons() {
    const idle = state.ready && !state.busy && !exited;
    for (const id of ['btn-builtin', 'model-files', 'model-pick', 'btn-start', 'btn-generate']) $(id).disabled = !idle;
    $('btn-save').disabled = !idle || !state.tuned;
    $('btn-stop').disabled = state.busy !== 'train' || !!exited;
  }

  $('btn-builtin').addEventListener('click', () => loadModel());
  for (const id of ['model-files', 'model-pick']) {
    $(id).addEventListener('change', (e) => { if (e.target.files.length) loadModel(e.target.files); });
  }
  $('btn-start').addEventListener('click', startRun);
  $('btn-stop').addEventListener('click', () => {
    call('stop').then((stopping) => { if (stopping) $('run-state').textContent = 'stopping after this step'; });
  });
  $('btn-generate').addEventListener('click', onGenerate);
  $('btn-save').addEventListener('click', onSave);

  start().catch(showError);
})();
