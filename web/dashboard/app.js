// lomo live dashboard: picks a run, follows its event stream over a websocket
// (/ws/view), and draws it with uPlot (vendored in vendor/, see web/embed.go).
// Event schema: monitor/events.go (SchemaVersion 1). Non-finite floats arrive
// as the strings "NaN", "Inf", "-Inf" and are drawn as gaps. The hub's
// notices ("waiting", "dropped") and close codes (4001-4004) are described
// in monitor/server.go.
(function () {
  'use strict';

  const params = new URLSearchParams(location.search);
  const token = params.get('token') || '';
  const $ = (id) => document.getElementById(id);
  const statusEl = $('status');
  const picker = $('run-picker');
  const btnCkpt = $('btn-checkpoint');
  const btnStop = $('btn-stop');

  const MAX_SAMPLES = 100;
  const MIB = 1024 * 1024;

  let currentRun = params.get('run') || '';
  let ws = null;
  let wsRun = '';
  let attempt = 0;
  let reconnectTimer = null;
  let state = newState();

  function newState() {
    return {
      seen: new Map(), // seq -> time: dedupe across reconnects and replays
      x: [], loss: [], lr: [], grad: [], clip: [], scale: [], tps: [],
      memTags: [], mem: new Map(), // tag -> {live: [], peak: []}
      evals: [], samples: [], info: null, end: null,
    };
  }

  function num(v) {
    return typeof v === 'number' && isFinite(v) ? v : null;
  }
  function pos(v) {
    const n = num(v);
    return n !== null && n > 0 ? n : null;
  }

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = 'status ' + (cls || '');
  }
  function setMessage(text) {
    $('message').textContent = text;
  }
  function authQuery(sep) {
    return token ? sep + 'token=' + encodeURIComponent(token) : '';
  }

  // ---- charts ----------------------------------------------------------

  const palette = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];
  const charts = {};

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

  function makeChart(id, series, opts) {
    const el = $(id);
    if (charts[id]) {
      charts[id].destroy();
      el.textContent = '';
    }
    const o = Object.assign({
      width: chartWidth(el),
      height: 220,
      legend: { show: true },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: false } },
      axes: [{ label: 'step' }, {}],
      series: [{ label: 'step' }].concat(series),
    }, opts || {});
    o.axes = o.axes.map((a, i) => (i > 0 && !a.values ? Object.assign({ values: yValues, size: 56 }, a) : a));
    const data = [[]].concat(series.map(() => []));
    charts[id] = new uPlot(o, data, el);
    return charts[id];
  }

  function initCharts() {
    makeChart('loss-chart', [{ label: 'loss', stroke: palette[0], width: 1.5, spanGaps: false }]);
    makeChart('lr-chart', [{ label: 'lr', stroke: palette[2], width: 1.5 }]);
    makeChart('grad-chart', [
      { label: 'grad norm', stroke: palette[1], width: 1.5 },
      { label: 'clip coef', stroke: palette[3], width: 1, scale: 'clip' },
    ], { axes: [{ label: 'step' }, {}, { side: 1, scale: 'clip', grid: { show: false } }],
         scales: { x: { time: false }, clip: { range: [0, 1.05] } } });
    makeChart('scale-chart', [{ label: 'loss scale', stroke: palette[4], width: 1.5 }],
      { scales: { x: { time: false }, y: { distr: 3, log: 2 } } });
    makeChart('tps-chart', [{ label: 'tokens/s', stroke: palette[5], width: 1.5 }]);
    makeMemChart();
  }

  function makeMemChart() {
    const series = [];
    state.memTags.forEach((tag, i) => {
      const c = palette[i % palette.length];
      series.push({ label: tag + ' live', stroke: c, width: 1.5 });
      series.push({ label: tag + ' peak', stroke: c, width: 1, dash: [4, 4] });
    });
    makeChart('mem-chart', series);
  }

  let drawTimer = null;
  let memDirty = false;
  function scheduleDraw() {
    if (drawTimer === null) drawTimer = setTimeout(draw, 40);
  }

  function setChart(id, data, points) {
    const c = charts[id];
    if (!c) return;
    c.setData(data);
    c.root.parentElement.setAttribute('data-points', String(points));
  }

  function countFinite(a) {
    let n = 0;
    for (const v of a) if (v !== null) n++;
    return n;
  }

  function draw() {
    drawTimer = null;
    const s = state;
    setChart('loss-chart', [s.x, s.loss], countFinite(s.loss));
    setChart('lr-chart', [s.x, s.lr], countFinite(s.lr));
    setChart('grad-chart', [s.x, s.grad, s.clip], countFinite(s.grad));
    setChart('scale-chart', [s.x, s.scale], countFinite(s.scale));
    setChart('tps-chart', [s.x, s.tps], countFinite(s.tps));
    if (memDirty) {
      memDirty = false;
      makeMemChart();
    }
    const md = [s.x];
    for (const tag of s.memTags) {
      const m = s.mem.get(tag);
      md.push(m.live, m.peak);
    }
    setChart('mem-chart', md, s.x.length);
  }

  window.addEventListener('resize', () => {
    for (const id in charts) {
      const el = $(id);
      charts[id].setSize({ width: chartWidth(el), height: 220 });
    }
  });

  // ---- events ----------------------------------------------------------

  function resetView() {
    state = newState();
    $('eval-table').tBodies[0].textContent = '';
    $('samples').textContent = '';
    $('errors').textContent = '';
    $('run-info').textContent = '';
    $('run-state').textContent = '';
    memDirty = true;
    scheduleDraw();
  }

  function addStep(st) {
    const s = state;
    const step = st.step;
    // A resumed run repeats steps: drop what comes at or after this step.
    let n = s.x.length;
    if (n > 0 && s.x[n - 1] >= step) {
      while (n > 0 && s.x[n - 1] >= step) n--;
      for (const a of [s.x, s.loss, s.lr, s.grad, s.clip, s.scale, s.tps]) a.length = n;
      for (const m of s.mem.values()) { m.live.length = n; m.peak.length = n; }
    }
    s.x.push(step);
    s.loss.push(num(st.loss));
    s.lr.push(num(st.lr));
    s.grad.push(num(st.grad_norm));
    s.clip.push(num(st.clip_coef));
    s.scale.push(pos(st.loss_scale));
    s.tps.push(num(st.tokens_per_sec));
    const memory = st.memory || {};
    for (const tag of Object.keys(memory).sort()) {
      if (!s.mem.has(tag)) {
        s.mem.set(tag, { live: new Array(n).fill(null), peak: new Array(n).fill(null) });
        s.memTags.push(tag);
        memDirty = true;
      }
    }
    for (const [tag, m] of s.mem) {
      const v = memory[tag];
      m.live.push(v ? v.live / MIB : null);
      m.peak.push(v ? v.peak / MIB : null);
    }
  }

  function addEval(ev) {
    const tr = document.createElement('tr');
    const v = num(ev.value);
    for (const cell of [ev.step, ev.task, ev.metric, v === null ? String(ev.value) : v.toPrecision(4), ev.zero_shot ? 'yes' : '']) {
      const td = document.createElement('td');
      td.textContent = String(cell);
      tr.appendChild(td);
    }
    const body = $('eval-table').tBodies[0];
    body.insertBefore(tr, body.firstChild);
  }

  function addSample(sm) {
    const div = document.createElement('div');
    div.className = 'sample';
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.textContent = 'step ' + sm.step;
    const prompt = document.createElement('span');
    prompt.className = 'prompt';
    prompt.textContent = sm.prompt || '';
    const text = document.createElement('span');
    text.textContent = sm.text || '';
    div.append(meta, prompt, text);
    const box = $('samples');
    box.insertBefore(div, box.firstChild);
    while (box.childNodes.length > MAX_SAMPLES) box.removeChild(box.lastChild);
  }

  function showInfo(info) {
    if (!info) return;
    const parts = [info.model, info.adapter, info.optimizer, info.dtype];
    if (info.params) parts.push((info.params / 1e6).toFixed(1) + 'M params');
    $('run-info').textContent = parts.filter(Boolean).join(' · ');
  }

  function handleEvent(ev) {
    if (typeof ev.seq !== 'number') return;
    if (statusEl.textContent === 'waiting') {
      setStatus('live', 'live');
      setMessage('');
    }
    const prev = state.seen.get(ev.seq);
    if (prev !== undefined) {
      if (prev === ev.time) return; // replayed after a reconnect: already drawn
      resetView(); // the hub's history differs (hub restarted): start over
    }
    state.seen.set(ev.seq, ev.time);
    switch (ev.kind) {
      case 'run':
        state.info = ev.run_info;
        state.end = null;
        showInfo(ev.run_info);
        $('run-state').textContent = 'running';
        break;
      case 'step':
        if (ev.step) addStep(ev.step);
        break;
      case 'eval':
        if (ev.eval) addEval(ev.eval);
        break;
      case 'sample':
        if (ev.sample) addSample(ev.sample);
        break;
      case 'end':
        state.end = ev.end || {};
        $('run-state').textContent = 'ended' + (state.end.reason ? ': ' + state.end.reason : '') +
          (state.end.err ? ' (' + state.end.err + ')' : '');
        break;
      case 'error': {
        const li = document.createElement('li');
        li.textContent = 'seq ' + ev.seq + ': ' + ((ev.end && ev.end.err) || 'error');
        $('errors').appendChild(li);
        break;
      }
    }
    scheduleDraw();
  }

  function handleMessage(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'ack') {
      setMessage(msg.ok ? (msg.action + ' requested') : ('control refused: ' + (msg.error || 'unknown')));
      return;
    }
    if (msg.type === 'waiting') { // the hub has no such run (yet)
      setStatus('waiting', '');
      setMessage('waiting for run "' + msg.run + '" to start publishing');
      return;
    }
    if (msg.type === 'dropped') { // history trimmed to the hub's budgets
      setMessage('the hub dropped ' + msg.events + ' earlier events of this run (' + msg.reason + ')');
      return;
    }
    handleEvent(msg);
  }

  // ---- connection ------------------------------------------------------

  function setButtons(on) {
    btnCkpt.disabled = !on;
    btnStop.disabled = !on;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (!currentRun) {
      setStatus('no run', '');
      return;
    }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = proto + '//' + location.host + '/ws/view?run=' + encodeURIComponent(currentRun) + authQuery('&');
    const sock = new WebSocket(url);
    ws = sock;
    wsRun = currentRun;
    setStatus(attempt ? 'reconnecting' : 'connecting', '');
    let stableTimer = null;
    sock.onopen = () => {
      if (ws !== sock) return;
      setStatus('live', 'live');
      setButtons(true);
      stableTimer = setTimeout(() => { attempt = 0; }, 3000);
    };
    sock.onmessage = (e) => {
      if (ws !== sock) return;
      handleMessage(e.data);
    };
    sock.onclose = (e) => {
      clearTimeout(stableTimer);
      if (ws !== sock) return; // replaced on purpose (run switched)
      ws = null;
      setButtons(false);
      if (e.code === 4001) setMessage('disconnected: this tab fell behind the stream; reconnecting');
      else if (e.code === 4002) { // the run's history was discarded: start over
        resetView();
        setMessage(e.reason || 'run reset');
      } else if (e.reason) setMessage('disconnected: ' + e.reason);
      const delay = Math.min(15000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
      attempt++;
      setStatus('reconnecting in ' + Math.ceil(delay / 1000) + 's', 'down');
      reconnectTimer = setTimeout(connect, delay);
    };
  }

  function switchRun(run) {
    if (run === wsRun && ws) return;
    currentRun = run;
    const p = new URLSearchParams(location.search);
    if (run) p.set('run', run); else p.delete('run');
    history.replaceState(null, '', location.pathname + '?' + p.toString());
    if (ws) {
      const old = ws;
      ws = null;
      old.close(1000, 'switching run');
    }
    attempt = 0;
    resetView();
    setButtons(false);
    connect();
  }

  function sendControl(action) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ type: 'control', action: action }));
    setMessage('sending ' + action + '...');
  }
  btnCkpt.addEventListener('click', () => sendControl('checkpoint'));
  btnStop.addEventListener('click', () => sendControl('stop'));
  picker.addEventListener('change', () => switchRun(picker.value));

  async function refreshRuns() {
    let runs;
    try {
      const headers = token ? { Authorization: 'Bearer ' + token } : {};
      const r = await fetch('api/runs', { headers: headers, cache: 'no-store' });
      if (r.status === 401) {
        setMessage('the monitor needs a token: open the URL printed by lomo (with ?token=)');
        return;
      }
      if (!r.ok) return;
      runs = await r.json();
    } catch (e) {
      return;
    }
    const ids = runs.map((r) => r.run);
    if (currentRun && !ids.includes(currentRun)) ids.unshift(currentRun);
    const have = Array.from(picker.options).map((o) => o.value);
    if (ids.join('\n') !== have.join('\n')) {
      picker.textContent = '';
      if (ids.length === 0) picker.add(new Option('(no runs yet)', ''));
      for (const r of runs) {
        const last = r.last_step ? ' · step ' + r.last_step.step : '';
        picker.add(new Option(r.run + last + (r.ended ? ' · ended' : ''), r.run));
      }
      if (currentRun && !runs.some((r) => r.run === currentRun)) picker.add(new Option(currentRun, currentRun), 0);
    } else {
      runs.forEach((r, i) => {
        const o = picker.options[ids.indexOf(r.run)] || picker.options[i];
        const last = r.last_step ? ' · step ' + r.last_step.step : '';
        o.text = r.run + last + (r.ended ? ' · ended' : '');
      });
    }
    if (!currentRun && runs.length > 0) {
      picker.value = runs[0].run;
      switchRun(runs[0].run);
      return;
    }
    picker.value = currentRun;
  }

  initCharts();
  if (currentRun) connect();
  else setStatus('no run', '');
  refreshRuns();
  setInterval(refreshRuns, 5000);
})();
