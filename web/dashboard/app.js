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
      evals: [], samples: [], info: null, end: null,
    };
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

  // ---- charts (charts.js) ----------------------------------------------

  const { Chart, MemoryChart, num, palette } = window.lomoCharts;
  const charts = {};
  let memChart = null;

  function initCharts() {
    for (const id in charts) charts[id].destroy();
    charts['loss-chart'] = new Chart($('loss-chart'), [{ label: 'loss', stroke: palette[0], width: 1.5, spanGaps: false }]);
    charts['lr-chart'] = new Chart($('lr-chart'), [{ label: 'lr', stroke: palette[2], width: 1.5 }]);
    charts['grad-chart'] = new Chart($('grad-chart'), [
      { label: 'grad norm', stroke: palette[1], width: 1.5 },
      { label: 'clip coef', stroke: palette[3], width: 1, scale: 'clip' },
    ], { axes: [{ label: 'step' }, {}, { side: 1, scale: 'clip', grid: { show: false } }],
         scales: { x: { time: false }, clip: { range: [0, 1.05] } } });
    charts['scale-chart'] = new Chart($('scale-chart'), [{ label: 'loss scale', stroke: palette[4], width: 1.5 }],
      { scales: { x: { time: false }, y: { distr: 3, log: 2 } } });
    charts['tps-chart'] = new Chart($('tps-chart'), [{ label: 'tokens/s', stroke: palette[5], width: 1.5 }]);
    newMemChart();
  }

  function newMemChart() {
    if (memChart) memChart.chart.destroy();
    memChart = new MemoryChart($('mem-chart'));
  }

  let drawTimer = null;
  function scheduleDraw() {
    if (drawTimer === null) drawTimer = setTimeout(draw, 40);
  }

  function countFinite(a) {
    let n = 0;
    for (const v of a) if (v !== null) n++;
    return n;
  }

  function draw() {
    drawTimer = null;
    const s = state;
    charts['loss-chart'].setData([s.x, s.loss], countFinite(s.loss));
    charts['lr-chart'].setData([s.x, s.lr], countFinite(s.lr));
    charts['grad-chart'].setData([s.x, s.grad, s.clip], countFinite(s.grad));
    charts['scale-chart'].setData([s.x, s.scale], countFinite(s.scale));
    charts['tps-chart'].setData([s.x, s.tps], countFinite(s.tps));
    memChart.draw(s.x);
  }

  // ---- events ----------------------------------------------------------

  function resetView() {
    state = newState();
    $('eval-table').tBodies[0].textContent = '';
    $('samples').textContent = '';
    $('errors').textContent = '';
    $('run-info').textContent = '';
    $('run-state').textContent = '';
    newMemChart();
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
      memChart.truncate(n);
    }
    s.x.push(step);
    s.loss.push(num(st.loss));
    s.lr.push(num(st.lr));
    s.grad.push(num(st.grad_norm));
    s.clip.push(num(st.clip_coef));
    s.scale.push(pos(st.loss_scale));
    s.tps.push(num(st.tokens_per_sec));
    memChart.push(st.memory);
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
    if (info.lora_params) parts.push(info.lora_params.toLocaleString('en') + ' LoRA adapter params');
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
