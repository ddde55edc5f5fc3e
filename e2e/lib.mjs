// Shared helpers of the browser tests: build lomo, start a training run with
// its dashboard, open headless Chromium.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, mkdirSync, copyFileSync, readFileSync, renameSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve, dirname, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

// The websocket client playwright-core bundles (the npm package ws).
const { ws: WebSocket } = createRequire(import.meta.url)('playwright-core/lib/utilsBundle');

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const artifacts = join(root, 'test-artifacts');

// testdata returns ../shared/testdata (or LOMO_TESTDATA), or null with the
// reason to skip; under LOMO_REQUIRE_TESTDATA=1 a missing folder throws.
export function testdata() {
  const dir = process.env.LOMO_TESTDATA || resolve(root, '..', 'shared', 'testdata');
  if (existsSync(join(dir, 'models', 'stories260K'))) return dir;
  if (process.env.LOMO_REQUIRE_TESTDATA === '1') throw new Error(`test data not found at ${dir} (LOMO_REQUIRE_TESTDATA=1)`);
  return null;
}

let built;
export function lomoBinary() {
  if (built) return built;
  const out = join(mkdtempSync(join(tmpdir(), 'lomo-e2e-')), 'lomo');
  execFileSync('go', ['build', '-o', out, './cmd/native'], { cwd: root, stdio: 'inherit' });
  built = out;
  return out;
}

// startTraining runs `lomo train` with a monitor and resolves once the
// dashboard URL is printed. With { publish: URL } it publishes to that hub
// instead (--publish) and resolves once it says so. The run id is e2e unless
// given.
export async function startTraining(td, extraArgs = [], { publish = '', run = 'e2e' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'lomo-run-'));
  const cfg = join(dir, 'run.yaml');
  writeFileSync(cfg, [
    `model_name_or_path: ${join(td, 'models', 'stories260K')}`,
    'dataset_name: copa',
    `train_file: ${join(td, 'superglue', 'COPA', 'val.jsonl')}`,
    'train_size: 400',
    'data_max_length: 48',
    'per_device_train_batch_size: 2',
    'learning_rate: 0.01',
    'num_train_epochs: 50',
    'max_steps: 2000',
    'clip_grad_norm: 0',
    'gradient_checkpointing: false',
    'zero_shot_eval: false',
    'evaluation_strategy: "no"',
    'save_strategy: "no"',
    `output_dir: ${join(dir, 'out')}`,
  ].join('\n'));
  const monitor = publish ? ['--publish', publish] : ['--monitor', '127.0.0.1:0'];
  const proc = spawn(lomoBinary(), ['train', '--config', cfg, ...monitor, '--run', run, ...extraArgs], {
    cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || tmpdir() },
  });
  let stdout = '', stderr = '';
  proc.stdout.on('data', (b) => { stdout += b; });
  const exited = new Promise((res) => proc.on('close', (code) => res(code)));
  const ready = publish ? /publishing run "[^"]*" to (\S+)/ : /dashboard: (\S+)/;
  const url = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error('lomo train not ready within 60 s:\n' + stderr)), 60_000);
    proc.stderr.on('data', (b) => {
      stderr += b;
      const m = ready.exec(stderr);
      if (m) { clearTimeout(timer); res(m[1]); }
    });
    proc.on('close', (code) => rej(new Error(`lomo train exited with ${code} before serving:\n${stderr}`)));
  });
  return { url, dir, proc, exited, out: () => stdout, err: () => stderr };
}

// startHub runs `lomo monitor --listen ADDR` (a free loopback port unless
// given) and resolves once it prints its dashboard URL.
export async function startHub(listen = '127.0.0.1:0', args = []) {
  const proc = spawn(lomoBinary(), ['monitor', '--listen', listen, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  proc.stderr.on('data', (b) => { stderr += b; });
  const exited = new Promise((res) => proc.on('close', (code, signal) => res(code ?? signal)));
  const url = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error('lomo monitor printed no URL within 30 s:\n' + stderr)), 30_000);
    proc.stdout.on('data', (b) => {
      stdout += b;
      const m = /dashboard: (\S+)/.exec(stdout);
      if (m) { clearTimeout(timer); res(m[1]); }
    });
    proc.on('close', (code) => rej(new Error(`lomo monitor exited with ${code}:\n${stderr}`)));
  });
  const u = new URL(url);
  return { url, host: u.host, proc, exited, err: () => stderr };
}

// connectWS opens a websocket (with extra request headers) and resolves once
// it is open. messages collects the text frames, parsed; closed resolves
// with { code, reason } when it closes.
export function connectWS(url, headers = {}) {
  return new Promise((res, rej) => {
    const ws = new WebSocket(url, { headers });
    const messages = [];
    const closed = new Promise((done) => ws.on('close', (code, reason) => done({ code, reason: String(reason) })));
    ws.on('message', (data) => { try { messages.push(JSON.parse(String(data))); } catch { messages.push(String(data)); } });
    ws.on('open', () => res({ ws, messages, closed }));
    ws.on('unexpected-response', (req, resp) => rej(new Error(`${url}: HTTP ${resp.statusCode}`)));
    ws.on('error', rej);
  });
}

// within resolves like promise, or rejects after ms naming what it waited
// for.
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// until polls fn (sync or async) every 50 ms until it returns a truthy
// value, which it resolves with; it rejects after ms with what.
export async function until(what, fn, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function browser() {
  mkdirSync(artifacts, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// goTestInBrowser compiles the Go tests of a package to WASM (GOOS=js) and
// runs them in a page of headless Chromium, on its WebGPU adapter. It
// resolves with the test binary's exit code and its output.
export async function goTestInBrowser(pkg, args = [], { timeout = 600_000 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'lomo-wasm-'));
  const name = pkg.split('/').pop();
  execFileSync('go', ['test', '-c', '-o', join(dir, 'test.wasm'), pkg], {
    cwd: root, stdio: 'inherit', env: { ...process.env, GOOS: 'js', GOARCH: 'wasm' },
  });
  const goroot = execFileSync('go', ['env', 'GOROOT'], { encoding: 'utf8' }).trim();
  copyFileSync(join(goroot, 'lib', 'wasm', 'wasm_exec.js'), join(dir, 'wasm_exec.js'));
  writeFileSync(join(dir, 'index.html'), `<!doctype html><meta charset="utf-8"><title>${name}.test</title>
<script src="wasm_exec.js"></script>
<script>
(async () => {
  const go = new Go();
  go.argv = ${JSON.stringify([`${name}.test`, ...args])};
  go.exit = (code) => { window.goExit = code; };
  const r = await WebAssembly.instantiateStreaming(fetch('test.wasm'), go.importObject);
  globalThis.wasm = r; // the WebGPU binding reads WASM memory through it
  await go.run(r.instance);
})().catch((e) => { console.error('harness: ' + e); window.goExit = 'harness error'; });
</script>`);
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
  const server = createServer((req, res) => {
    const file = join(dir, new URL(req.url, 'http://x').pathname.slice(1) || 'index.html');
    if (!file.startsWith(dir) || !existsSync(file)) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  const b = await browser();
  let out = '';
  try {
    const page = await b.newPage();
    page.on('console', (m) => { out += m.text() + '\n'; });
    page.on('pageerror', (e) => { out += 'pageerror: ' + e + '\n'; });
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForFunction(() => window.goExit !== undefined, null, { timeout, polling: 500 });
    return { code: await page.evaluate(() => window.goExit), out };
  } finally {
    await b.close();
    server.close();
  }
}

// buildWasm builds lomo for the browser into web/wasm/, as `just wasm`
// does; a lomo built after it embeds it (lomoBinary rebuilds).
export function buildWasm() {
  // Written beside and renamed into place: test files running at the same
  // time may build it, and a lomo build embeds whatever is there.
  const dir = join(root, 'web', 'wasm');
  const tmp = (name) => join(dir, `.${name}.${process.pid}`);
  execFileSync('go', ['build', '-ldflags=-s', '-o', tmp('lomo.wasm'), './cmd/wasm'], {
    cwd: root, stdio: 'inherit', env: { ...process.env, GOOS: 'js', GOARCH: 'wasm' },
  });
  renameSync(tmp('lomo.wasm'), join(dir, 'lomo.wasm'));
  const goroot = execFileSync('go', ['env', 'GOROOT'], { encoding: 'utf8' }).trim();
  copyFileSync(join(goroot, 'lib', 'wasm', 'wasm_exec.js'), tmp('wasm_exec.js'));
  renameSync(tmp('wasm_exec.js'), join(dir, 'wasm_exec.js'));
  built = undefined;
}

// startWeb builds the WASM and lomo, runs `lomo web` on a free loopback
// port and resolves with the fine-tuning page's URL once it serves.
export async function startWeb() {
  buildWasm();
  const proc = spawn(lomoBinary(), ['web', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  proc.stderr.on('data', (b) => { stderr += b; });
  const url = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error('lomo web printed no URL within 60 s:\n' + stderr)), 60_000);
    proc.stdout.on('data', (b) => {
      stdout += b;
      const m = /fine-tune in the browser: (\S+)/.exec(stdout);
      if (m) { clearTimeout(timer); res(m[1]); }
    });
    proc.on('exit', (code) => rej(new Error(`lomo web exited with ${code}:\n${stderr}`)));
  });
  return { url, proc, out: () => stdout, err: () => stderr };
}

// runLomo runs the native lomo and returns its stdout (throws on failure).
export function runLomo(args, opts = {}) {
  return execFileSync(lomoBinary(), args, {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20,
    env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || tmpdir() }, ...opts,
  });
}
