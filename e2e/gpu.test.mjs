// lomo's GPU layer in the browser: the Go tests of gpu/, compiled to WASM,
// run in headless Chromium on its WebGPU adapter (SwiftShader without a
// GPU). Among them: a deliberately invalid kernel and a deliberately failing
// submit must give Go errors that name them, and a lost device is reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { goTestInBrowser } from './lib.mjs';

test('gpu package tests pass in the browser', { timeout: 600_000 }, async () => {
  const { code, out } = await goTestInBrowser('./gpu', ['-test.v']);
  assert.equal(code, 0, `gpu.test exit code in Chromium; output:\n${out}`);
  for (const name of ['TestInvalidKernelIsNamed', 'TestFailingSubmitIsNamed', 'TestDeviceLostIsReported', 'TestDispatchManyInOneBatch']) {
    assert.match(out, new RegExp(`--- PASS: ${name} `), `${name} ran and passed; output:\n${out}`);
  }
  assert.match(out, /compile kernel "test\/broken": validation error/, 'the invalid kernel is named');
  assert.match(out, /submit a batch of 1 dispatches \(kernels test\/scale\)[^\n]*validation error/, 'the failing submit names its kernel');
});
