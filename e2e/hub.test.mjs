// The monitoring hub under abuse, end to end: a standalone `lomo monitor`
// with 1000 viewers on made-up runs, a second client trying to publish into
// a trainer's run, a hub restarted under a publishing `lomo train
// --publish`; and `lomo train --monitor`, whose run only the trainer writes.
// The dashboard runs in headless Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { testdata, startTraining, startHub, connectWS, until, within, browser, artifacts } from './lib.mjs';

const runKey = { 'Lomo-Run-Key': 'e2e-intruder-run-key-0123' };

async function runs(base) {
  const r = await fetch(new URL('/api/runs', base));
  assert.equal(r.status, 200);
  return r.json();
}

function stop(proc) {
  if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
}

test('standalone hub: viewers create no runs, a run is its publisher\'s, a restarted hub learns the run again',
  { timeout: 300_000 }, async (t) => {
    const td = testdata();
    if (!td) { t.skip('../shared/testdata not found (set LOMO_TESTDATA)'); return; }
    let hub = await startHub();
    const host = hub.host;
    const viewers = [];
    let train, b;
    try {
      // 1000 viewers on made-up run ids: each is told to wait; no run exists.
      for (let i = 0; i < 1000; i += 100) {
        viewers.push(...await Promise.all(Array.from({ length: 100 }, (_, j) =>
          connectWS(`ws://${host}/ws/view?run=made-up-${i + j}`))));
      }
      await until('1000 waiting notices', () => viewers.every((v) => v.messages.length > 0));
      for (const v of viewers) assert.equal(v.messages[0].type, 'waiting');
      assert.deepEqual(await runs(hub.url), [], 'viewers created no runs');

      // A dashboard opened before the run exists waits for it.
      b = await browser();
      const page = await b.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(`http://${host}/?run=e2e-hub`);
      await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'waiting', null, { timeout: 30_000 });
      assert.match(await page.textContent('#message'), /waiting for run "e2e-hub"/);

      // A real trainer publishes: the dashboard shows its model and its loss.
      train = await startTraining(td, [], { publish: `ws://${host}`, run: 'e2e-hub' });
      await page.waitForFunction(() => Number(document.querySelector('#loss-chart').dataset.points) >= 3, null, { timeout: 120_000 });
      assert.match(await page.textContent('#run-info'), /stories260K/);
      assert.equal(await page.textContent('#status'), 'live');

      // Another client cannot publish into the trainer's run.
      const intruder = await connectWS(`ws://${host}/ws/publish?run=e2e-hub`, runKey);
      intruder.ws.send(JSON.stringify({ v: 1, kind: 'end', end: { reason: 'done' } }));
      const refused = await within(intruder.closed, 10_000, 'the hub to refuse the intruder');
      assert.equal(refused.code, 4003, `intruder closed with ${refused.code} ${refused.reason}`);
      assert.match(refused.reason, /belongs to another publisher/);
      const [run] = await runs(hub.url);
      assert.equal(run.run, 'e2e-hub');
      assert.equal(run.ended, false, 'the intruder\'s end did not reach the run');

      // The hub dies and comes back on the same address: the trainer's
      // publisher reconnects and announces its run again, so the new hub (and
      // the dashboard that stayed open) know its model and config.
      await page.evaluate(() => { document.querySelector('#run-info').textContent = ''; });
      stop(hub.proc);
      await hub.exited;
      hub = await startHub(host);
      const info = await until('the run on the restarted hub', async () => (await runs(hub.url)).find((r) => r.run === 'e2e-hub' && r.info));
      assert.match(info.info.model, /stories260K/);
      assert.ok(info.info.config, 'the run event carries the config');
      await page.waitForFunction(() => /stories260K/.test(document.querySelector('#run-info').textContent), null, { timeout: 60_000 });
      await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'live', null, { timeout: 60_000 });
      await page.screenshot({ path: join(artifacts, 'hub-restarted.png'), fullPage: true });

      // Control still reaches the trainer through the new hub; it reported
      // no refusal on the way.
      await page.click('#btn-stop');
      const code = await Promise.race([train.exited, new Promise((r) => setTimeout(() => r('timeout'), 120_000).unref())]);
      assert.equal(code, 0, `lomo train exit code (stderr:\n${train.err()})`);
      assert.doesNotMatch(train.err(), /refused/);
      await page.waitForFunction(() => /stopped/.test(document.querySelector('#run-state')?.textContent || ''), null, { timeout: 30_000 });
    } finally {
      for (const v of viewers) v.ws.terminate();
      if (b) await b.close();
      if (train) stop(train.proc);
      stop(hub.proc);
    }
  });

test('lomo train --publish into a run that is not its own fails, saying why', { timeout: 120_000 }, async (t) => {
  const td = testdata();
  if (!td) { t.skip('../shared/testdata not found (set LOMO_TESTDATA)'); return; }
  const hub = await startHub();
  try {
    const owner = await connectWS(`ws://${hub.host}/ws/publish?run=taken`, runKey);
    await until('ready', () => owner.messages.length > 0);
    assert.equal(owner.messages[0].type, 'ready');
    await assert.rejects(startTraining(td, [], { publish: `ws://${hub.host}`, run: 'taken' }),
      /exited with 1[\s\S]*hub refused the publisher: run "taken": run belongs to another publisher/);
    owner.ws.terminate();
  } finally {
    stop(hub.proc);
  }
});

test('lomo train --monitor: only the trainer publishes into its run', { timeout: 300_000 }, async (t) => {
  const td = testdata();
  if (!td) { t.skip('../shared/testdata not found (set LOMO_TESTDATA)'); return; }
  const train = await startTraining(td);
  try {
    const base = new URL(train.url);
    await until('the trainer\'s first step', async () => (await runs(base)).find((r) => r.run === 'e2e' && r.last_step), 120_000);
    const intruder = await connectWS(`ws://${base.host}/ws/publish?run=e2e`, runKey);
    intruder.ws.send(JSON.stringify({ v: 1, kind: 'step', step: { step: 999999, loss: 0 } }));
    const refused = await within(intruder.closed, 10_000, 'the hub to refuse the intruder');
    assert.equal(refused.code, 4003, `intruder closed with ${refused.code} ${refused.reason}`);
    assert.match(refused.reason, /trainer serving this hub/);
    const [run] = await runs(base);
    assert.ok(run.last_step.step < 999999 && !run.ended, `run ${JSON.stringify(run.last_step)}`);
  } finally {
    stop(train.proc);
  }
});

test('a hub over its byte budget drops the oldest events and the dashboard says so', { timeout: 120_000 }, async () => {
  const hub = await startHub('127.0.0.1:0', ['--run-budget', '1', '--total-budget', '4']);
  let b;
  try {
    const pub = await connectWS(`ws://${hub.host}/ws/publish?run=e2e-budget`, { 'Lomo-Run-Key': 'e2e-budget-run-key-0123' });
    await until('the hub to accept the publisher', () => pub.messages.some((m) => m.type === 'ready'));
    pub.ws.send(JSON.stringify({ v: 1, kind: 'run', run_info: { model: 'budget-model' } }));
    // Four samples of 400 kB against a budget of 1 MiB: the oldest go.
    const text = 'x'.repeat(400_000);
    for (let i = 1; i <= 4; i++) {
      pub.ws.send(JSON.stringify({ v: 1, kind: 'sample', sample: { step: i, prompt: 'p', text } }));
    }
    // Two of the four fit beside the run event: wait for the fourth to
    // arrive (checking after the third would see one drop, and race it).
    const run = await until('all four samples on the hub', async () => {
      const r = await (await fetch(new URL('/api/runs', hub.url))).json();
      return r.find((x) => x.run === 'e2e-budget' && x.dropped_events >= 2);
    });
    assert.equal(run.dropped_events, 2, 'four samples of 400 kB in a 1 MiB budget keep two');
    assert.ok(run.bytes <= 1 << 20, `the run keeps ${run.bytes} bytes, over its 1 MiB budget`);
    b = await browser();
    const page = await b.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`http://${hub.host}/?run=e2e-budget`);
    await page.waitForFunction(() => /dropped \d+ earlier events/.test(document.querySelector('#message')?.textContent ?? ''), null, { timeout: 30_000 });
    assert.match(await page.textContent('#message'), new RegExp(`the hub dropped ${run.dropped_events} earlier events of this run`));
    assert.match(await page.textContent('#run-info'), /budget-model/, 'the run event is kept whatever the budget');
    pub.ws.close();
  } finally {
    if (b) await b.close();
    stop(hub.proc);
  }
});
