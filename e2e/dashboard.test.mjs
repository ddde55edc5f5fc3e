// The live dashboard of a running `lomo train`, in headless Chromium: the
// loss curve grows while training runs, and the Stop button stops the run
// cleanly with a checkpoint (control end to end).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { testdata, startTraining, browser, artifacts } from './lib.mjs';

test('dashboard shows the loss curve grow, then stops the run', { timeout: 300_000 }, async (t) => {
  const td = testdata();
  if (!td) { t.skip('../shared/testdata not found (set LOMO_TESTDATA)'); return; }
  const run = await startTraining(td);
  const b = await browser();
  try {
    const page = await b.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(run.url);
    await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'live', null, { timeout: 60_000 });
    const points = () => page.$eval('#loss-chart', (el) => Number(el.dataset.points));
    await page.waitForFunction(() => Number(document.querySelector('#loss-chart').dataset.points) >= 3, null, { timeout: 120_000 });
    const first = await points();
    await page.waitForFunction((n) => Number(document.querySelector('#loss-chart').dataset.points) > n, first, { timeout: 120_000 });
    const second = await points();
    assert.ok(second > first, `loss points grew from ${first} to ${second}`);
    assert.ok(await page.$('#loss-chart canvas'), 'the loss chart draws on a canvas');
    await page.screenshot({ path: join(artifacts, 'dashboard.png'), fullPage: true });

    // Stop after the current step: the trainer saves a checkpoint and exits 0.
    await page.click('#btn-stop');
    const code = await Promise.race([run.exited, new Promise((r) => setTimeout(() => r('timeout'), 120_000).unref())]);
    assert.equal(code, 0, `lomo train exit code (stderr:\n${run.err()})`);
    const summary = JSON.parse(run.out().trim().split('\n').pop());
    assert.equal(summary.stopped, true, 'the run reports it was stopped');
    const cks = readdirSync(join(run.dir, 'out')).filter((n) => n.startsWith('checkpoint-'));
    assert.equal(cks.length, 1, `one checkpoint saved: ${cks}`);
    assert.ok(existsSync(join(run.dir, 'out', cks[0], 'model.safetensors')));
    await page.waitForFunction(() => /stopped|ended|done/i.test(document.querySelector('#run-state')?.textContent || ''), null, { timeout: 30_000 });
  } finally {
    await b.close();
    run.proc.kill();
  }
});
