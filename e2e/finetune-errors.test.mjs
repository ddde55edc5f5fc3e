// What the fine-tuning page says when things go wrong, in headless
// Chromium: no WebGPU; a kernel that does not compile; a tensor larger than
// the device's storage binding; malformed files (the CLI's own messages).
// Never a hang, never zeros shown as results.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { browser, runLomo, startWeb, testdata } from './lib.mjs';

let web, b;
before(async () => {
  web = await startWeb();
  b = await browser();
});
after(async () => {
  if (b) await b.close();
  if (web) web.proc.kill();
});

const settled = (page) => page.waitForFunction(
  () => ['ready', 'error', 'no WebGPU', 'done'].includes(document.querySelector('#status').textContent), null, { timeout: 120_000 });

// cliError runs lomo natively and returns the message it exits with.
function cliError(args) {
  try {
    runLomo(args);
  } catch (e) {
    assert.ok(e.status > 0, `lomo ${args.join(' ')} exits non-zero (got ${e.status})`);
    return String(e.stderr).trim().split('\n').pop().replace(/^lomo \w+: /, '');
  }
  assert.fail(`lomo ${args.join(' ')} succeeded`);
}

test('without WebGPU the page says what is missing', { timeout: 120_000 }, async () => {
  // Chromium without --enable-unsafe-webgpu: Linux builds offer no WebGPU.
  const plain = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox', '--disable-quic', '--no-first-run'] });
  try {
    const page = await plain.newPage();
    await page.goto(web.url);
    await settled(page);
    assert.equal(await page.textContent('#status'), 'no WebGPU');
    const msg = await page.textContent('#error');
    assert.match(msg, /no WebGPU/i);
    assert.match(msg, /navigator\.gpu|adapter/, `it says what is missing: ${msg}`);
    assert.ok(await page.isDisabled('#btn-start'), 'Start is disabled');
    assert.equal(await page.textContent('#zero-shot'), '—', 'no figure shown');
  } finally {
    await plain.close();
  }
});

test('a kernel that does not compile is an error that names it, and nothing is shown as a result', { timeout: 300_000 }, async () => {
  const page = await b.newPage();
  // Break the RMSNorm kernels (the first the model runs) as WebGPU sees them.
  await page.addInitScript(() => {
    const create = GPUDevice.prototype.createShaderModule;
    GPUDevice.prototype.createShaderModule = function (desc) {
      if (desc && typeof desc.code === 'string' && desc.code.includes('rstd')) {
        desc = Object.assign({}, desc, { code: desc.code + '\nthis line is not WGSL;\n' });
      }
      return create.call(this, desc);
    };
  });
  await page.goto(web.url);
  await settled(page);
  await page.fill('#config', 'per_device_train_batch_size: 4\nmax_steps: 2');
  await page.fill('#task-train', '8');
  await page.fill('#task-eval', '8');
  await page.click('#btn-start');
  await page.waitForFunction(() => window.lomoPage.errors.length > 0 || document.querySelector('#status').textContent === 'done', null, { timeout: 240_000 });
  const p = await page.evaluate(() => window.lomoPage);
  assert.equal(await page.textContent('#status'), 'error');
  assert.match(p.errors[0].message, /gpu: compile kernel "rmsnorm[^"]*": validation error/, `the error names the kernel: ${p.errors[0].message}`);
  assert.match(await page.textContent('#error'), /compile kernel "rmsnorm/);
  assert.deepEqual(p.steps, [], 'no step reported');
  assert.deepEqual(p.evals, [], 'no evaluation reported');
  for (const id of ['#zero-shot', '#finetuned', '#gen-before', '#gen-after', '#steps']) {
    assert.equal(await page.textContent(id), '—', `${id} shows no figure`);
  }
  assert.ok(!(await page.isDisabled('#btn-start')), 'the page is usable again');
  await page.close();
});

test('a tensor larger than the device allows is named with the limit', { timeout: 120_000 }, async () => {
  const page = await b.newPage();
  // A device whose storage bindings hold 64 KiB: the built-in model's
  // embedding (640 x 64 f32, 160 KiB) does not fit one.
  await page.addInitScript(() => {
    const get = Object.getOwnPropertyDescriptor(GPUDevice.prototype, 'limits').get;
    Object.defineProperty(GPUDevice.prototype, 'limits', {
      get() {
        const l = get.call(this);
        const o = {};
        for (const k in l) o[k] = l[k];
        o.maxStorageBufferBindingSize = 65536;
        return o;
      },
    });
  });
  await page.goto(web.url);
  await settled(page);
  await page.click('#btn-builtin');
  await page.waitForFunction(() => window.lomoPage.errors.length > 0 || window.lomoPage.model, null, { timeout: 60_000 });
  const p = await page.evaluate(() => window.lomoPage);
  assert.equal(p.model, null, 'no model loaded');
  assert.equal(p.errors[0].code, 'too-large');
  assert.match(p.errors[0].message,
    /tensor model\.embed_tokens\.weight \[640 64\] \(f32\) is 163840 bytes, larger than this device's max storage buffer binding size of 65536 bytes/);
  assert.match(await page.textContent('#limits'), /64 KiB/, 'the page shows the limit');
  await page.close();
});

test('malformed files give the messages of the CLI', { timeout: 180_000 }, async (t) => {
  const td = testdata();
  if (!td) { t.skip('../shared/testdata not found (set LOMO_TESTDATA)'); return; }
  const src = join(td, 'models', 'stories260K');
  const dir = mkdtempSync(join(tmpdir(), 'lomo-bad-'));
  for (const n of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(src, n), join(dir, n));
  writeFileSync(join(dir, 'config.json'), '{"hidden_size": 64, "num_hidden_layers": ');
  const page = await b.newPage();
  await page.goto(web.url);
  await settled(page);

  // A truncated config.json.
  await page.setInputFiles('#model-pick', ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'].map((n) => join(dir, n)));
  await page.waitForFunction(() => window.lomoPage.errors.length > 0 || window.lomoPage.model, null, { timeout: 60_000 });
  let p = await page.evaluate(() => window.lomoPage);
  const want = cliError(['generate', '--model', dir, '--max-new-tokens', '1']).replaceAll(dir, 'DIR');
  assert.equal(p.errors[0].message.replace(/\/models\/\d+/g, 'DIR'), want);
  assert.match(await page.textContent('#error'), /malformed config JSON/);

  // A task file with a bad line.
  const task = join(dir, 'bad.jsonl');
  writeFileSync(task, '{"question": "is it an animal", "passage": "A cat sat.", "label": true, "idx": 0}\n{"question": "is it", "label": 3}\n');
  await page.fill('#config', 'dataset_name: boolq\nmax_steps: 1');
  await page.setInputFiles('#train-file', task);
  await page.click('#btn-start');
  await page.waitForFunction(() => window.lomoPage.errors.length > 1, null, { timeout: 120_000 });
  p = await page.evaluate(() => window.lomoPage);
  const cfg = join(dir, 'run.yaml');
  writeFileSync(cfg, `model_name_or_path: ${src}\ndataset_name: boolq\ntrain_file: ${task}\nmax_steps: 1\noutput_dir: ${join(dir, 'out')}\n`);
  const wantTask = cliError(['train', '--config', cfg]).replaceAll(task, 'FILE');
  assert.equal(p.errors[1].message.replace(/\/runs\/\d+\/data\/bad\.jsonl/g, 'FILE'), wantTask);
  assert.equal(await page.textContent('#zero-shot'), '—');
  await page.close();
});
