// The in-memory filesystem of the browser build (web/finetune/memfs.js):
// the Node fs calls that Go's os package makes under GOOS=js, with Node's
// semantics and error codes, checked here without a browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import vm from 'node:vm';
import { root } from './lib.mjs';

function load() {
  const ctx = { TextDecoder, console: { log() {}, warn() {} } };
  vm.runInNewContext(readFileSync(join(root, 'web', 'finetune', 'memfs.js'), 'utf8'), ctx);
  const fs = ctx.fs;
  const call = (name, ...args) => new Promise((res, rej) => fs[name](...args, (err, v) => (err ? rej(err) : res(Array.isArray(v) ? [...v] : v))));
  // (arrays from the filesystem's context are copied: another realm's
  // prototypes fail deepStrictEqual)
  return { fs, call, c: fs.constants };
}

const bytes = (s) => new Uint8Array(Buffer.from(s));
const text = (u) => Buffer.from(u).toString();

test('files: create, write, read sequentially and at offsets, append, truncate', async () => {
  const { call, c } = load();
  await call('mkdir', '/a', 0o755);
  const fd = await call('open', '/a/f.txt', c.O_CREAT | c.O_WRONLY | c.O_TRUNC, 0o644);
  assert.equal(await call('write', fd, bytes('hello '), 0, 6, null), 6);
  assert.equal(await call('write', fd, bytes('world'), 0, 5, null), 5);
  assert.equal(await call('write', fd, bytes('W'), 0, 1, 6), 1); // pwrite leaves the position
  await call('close', fd);
  assert.equal((await call('stat', '/a/f.txt')).size, 11);

  const rd = await call('open', '/a/f.txt', c.O_RDONLY, 0);
  const buf = new Uint8Array(5);
  assert.equal(await call('read', rd, buf, 0, 5, null), 5);
  assert.equal(text(buf), 'hello');
  assert.equal(await call('read', rd, buf, 0, 5, 6), 5); // pread
  assert.equal(text(buf), 'World');
  assert.equal(await call('read', rd, buf, 0, 5, null), 5); // the position moved by the reads without offset only
  assert.equal(text(buf), ' Worl');
  assert.equal(await call('read', rd, buf, 0, 5, 100), 0, 'past the end: 0 bytes');
  await assert.rejects(call('write', rd, bytes('x'), 0, 1, null), { code: 'EBADF' });
  await call('close', rd);

  const ap = await call('open', '/a/f.txt', c.O_WRONLY | c.O_APPEND, 0);
  await call('write', ap, bytes('!'), 0, 1, 0);
  await call('close', ap);
  await call('truncate', '/a/f.txt', 14);
  const all = new Uint8Array(14);
  const fd2 = await call('open', '/a/f.txt', c.O_RDONLY, 0);
  await call('read', fd2, all, 0, 14, 0);
  assert.deepEqual([...all], [...bytes('hello World!'), 0, 0], 'append at the end, growth zero-filled');
  await call('ftruncate', fd2, 5);
  assert.equal((await call('fstat', fd2)).size, 5);
  await call('close', fd2);
  await assert.rejects(call('close', fd2), { code: 'EBADF' });
});

test('errors carry Node codes', async () => {
  const { call, c } = load();
  await assert.rejects(call('open', '/nope', c.O_RDONLY, 0), { code: 'ENOENT' });
  await assert.rejects(call('open', '/no/dir/f', c.O_CREAT | c.O_WRONLY, 0o644), { code: 'ENOENT' });
  await call('mkdir', '/d', 0o755);
  await assert.rejects(call('mkdir', '/d', 0o755), { code: 'EEXIST' });
  await assert.rejects(call('open', '/d', c.O_WRONLY, 0), { code: 'EISDIR' });
  const fd = await call('open', '/d/x', c.O_CREAT | c.O_EXCL | c.O_WRONLY, 0o600);
  await call('close', fd);
  await assert.rejects(call('open', '/d/x', c.O_CREAT | c.O_EXCL | c.O_WRONLY, 0o600), { code: 'EEXIST' });
  await assert.rejects(call('open', '/d/x', c.O_RDONLY | c.O_DIRECTORY, 0), { code: 'ENOTDIR' });
  await assert.rejects(call('mkdir', '/d/x/y', 0o755), { code: 'ENOTDIR' });
  await assert.rejects(call('rmdir', '/d'), { code: 'ENOTEMPTY' });
  await assert.rejects(call('unlink', '/d'), { code: 'EISDIR' });
  await assert.rejects(call('rmdir', '/d/x'), { code: 'ENOTDIR' });
  await assert.rejects(call('readlink', '/d/x'), { code: 'ENOSYS' });
  assert.ok((await call('stat', '/d')).isDirectory());
  assert.equal((await call('stat', '/d/x')).mode & 0o777, 0o600);
});

test('folders: list, rename (a checkpoint moved into place), remove', async () => {
  const { fs, call, c } = load();
  fs.memfs.put('/out/ck.tmp/model.bin', bytes('new'));
  fs.memfs.put('/out/ck.tmp/config.json', bytes('{}'));
  fs.memfs.put('/out/ck/model.bin', bytes('old'));
  assert.deepEqual(await call('readdir', '/out'), ['ck', 'ck.tmp']);
  await assert.rejects(call('rename', '/out/ck.tmp', '/out/ck'), { code: 'ENOTEMPTY' });
  await call('rename', '/out/ck', '/out/ck.old');
  await call('rename', '/out/ck.tmp', '/out/ck');
  assert.deepEqual(await call('readdir', '/out/ck'), ['config.json', 'model.bin']);
  assert.equal(text(fs.memfs.get('/out/ck/model.bin')), 'new');
  await assert.rejects(call('rename', '/out/ck', '/out/ck/inside'), { code: 'EINVAL' });
  // An open file survives its unlinking, as on Unix.
  const fd = await call('open', '/out/ck.old/model.bin', c.O_RDONLY, 0);
  await call('unlink', '/out/ck.old/model.bin');
  const b = new Uint8Array(3);
  await call('read', fd, b, 0, 3, 0);
  assert.equal(text(b), 'old');
  await call('rmdir', '/out/ck.old');
  assert.deepEqual([...fs.memfs.list('/out')], ['ck']);
  fs.memfs.remove('/out');
  await assert.rejects(call('stat', '/out'), { code: 'ENOENT' });
  // Relative and dotted paths resolve from "/".
  fs.memfs.put('x/./y/../z', bytes('1'));
  assert.equal(text(fs.memfs.get('/x/z')), '1');
});
