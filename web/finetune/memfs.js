// memfs: an in-memory filesystem for lomo's WASM build.
//
// Go's os package under GOOS=js calls globalThis.fs with the callback API of
// Node's fs module (syscall/fs_js.go lists the calls: open, read, write,
// fstat, mkdir, readdir, rename, unlink, ...). The stub in wasm_exec.js
// answers ENOSYS to all of them but writes to stdout and stderr; this file
// implements them on a tree held in memory, so that the trainer, the model
// loader and the checkpoint writer run in the browser as they are, on paths
// such as /models/m1/config.json. Load it before wasm_exec.js (which keeps
// an fs that is already there).
//
// Besides the Node calls it offers, for lomo's own use (cmd/wasm):
//   fs.memfs.put(path, bytes)  create or replace a file (parents made), taking
//                              the Uint8Array without a copy
//   fs.memfs.get(path)         a file's bytes (a view, not a copy)
//   fs.memfs.list(dir)         the names in a folder, sorted
//   fs.memfs.remove(path)      remove a file or a whole folder
// Errors carry Node's codes (ENOENT, EEXIST, ...), which Go maps to errnos.
(() => {
  'use strict';
  const S_IFDIR = 0o040000;
  const S_IFREG = 0o100000;
  // Linux's values, as Node reports them.
  const constants = {
    O_RDONLY: 0, O_WRONLY: 1, O_RDWR: 2, O_CREAT: 0o100, O_EXCL: 0o200,
    O_TRUNC: 0o1000, O_APPEND: 0o2000, O_DIRECTORY: 0o200000,
  };

  function fsError(code, op, path) {
    const e = new Error(`${code}: ${op} '${path}'`);
    e.code = code;
    return e;
  }

  let nextIno = 1;
  function newNode(dir, mode) {
    const now = Date.now();
    return {
      dir, mode: (mode & 0o7777) | (dir ? S_IFDIR : S_IFREG), ino: nextIno++,
      children: dir ? new Map() : null, data: dir ? null : new Uint8Array(0), size: 0,
      atimeMs: now, mtimeMs: now, ctimeMs: now,
    };
  }
  const root = newNode(true, 0o755);

  // parts splits a path into its names, resolving "." and "..". Relative
  // paths are taken from "/" (the working directory, see process.cwd).
  function parts(path) {
    if (typeof path !== 'string' || path === '') throw fsError('EINVAL', 'resolve', path);
    const out = [];
    for (const s of path.split('/')) {
      if (s === '' || s === '.') continue;
      if (s === '..') out.pop(); else out.push(s);
    }
    return out;
  }

  // lookup returns the node at path, or null.
  function lookup(path) {
    let n = root;
    for (const name of parts(path)) {
      if (!n.dir) return null;
      n = n.children.get(name);
      if (!n) return null;
    }
    return n;
  }

  // parentOf returns [folder node, last name] for path; the folder must exist.
  function parentOf(path, op) {
    const ps = parts(path);
    if (ps.length === 0) throw fsError('EEXIST', op, path);
    const name = ps.pop();
    let n = root;
    for (const p of ps) {
      if (!n.dir) throw fsError('ENOTDIR', op, path);
      n = n.children.get(p);
      if (!n) throw fsError('ENOENT', op, path);
    }
    if (!n.dir) throw fsError('ENOTDIR', op, path);
    return [n, name];
  }

  function must(path, op) {
    const n = lookup(path);
    if (!n) throw fsError('ENOENT', op, path);
    return n;
  }

  function stat(n) {
    return {
      dev: 1, ino: n.ino, mode: n.mode, nlink: 1, uid: 0, gid: 0, rdev: 0,
      size: n.dir ? 4096 : n.size, blksize: 4096, blocks: Math.ceil((n.dir ? 4096 : n.size) / 512),
      atimeMs: n.atimeMs, mtimeMs: n.mtimeMs, ctimeMs: n.ctimeMs,
      isDirectory() { return n.dir; },
      isFile() { return !n.dir; },
    };
  }

  function resize(n, size) {
    if (size > n.data.length) {
      const grown = new Uint8Array(Math.max(size, Math.min(2 * n.data.length, n.data.length + (64 << 20)), 4096));
      grown.set(n.data.subarray(0, n.size));
      n.data = grown;
    } else if (size < n.size) {
      n.data.fill(0, size, n.size);
    }
    n.size = size;
    n.mtimeMs = n.ctimeMs = Date.now();
  }

  const fds = new Map(); // fd -> {node, flags, pos}
  let nextFd = 10;
  function file(fd, op) {
    const f = fds.get(fd);
    if (!f) throw fsError('EBADF', op, String(fd));
    return f;
  }

  // Standard output and error go to the console, a line at a time (as in
  // wasm_exec.js), and to fs.memfs.onOutput when set.
  const decoder = new TextDecoder('utf-8');
  const pending = { 1: '', 2: '' };
  function writeOutput(fd, buf) {
    pending[fd] += decoder.decode(buf);
    const nl = pending[fd].lastIndexOf('\n');
    if (nl !== -1) {
      const lines = pending[fd].substring(0, nl);
      pending[fd] = pending[fd].substring(nl + 1);
      (fd === 2 ? console.warn : console.log)(lines);
      if (memfs.onOutput) memfs.onOutput(fd, lines);
    }
    return buf.length;
  }

  // Each call answers through its callback; the work is synchronous.
  function call(cb, fn) {
    let r;
    try {
      r = fn();
    } catch (e) {
      cb(e.code ? e : fsError('EIO', e.message, ''));
      return;
    }
    cb(null, r);
  }
  const ok = (cb) => cb(null);
  const enosys = (op) => (...args) => args[args.length - 1](fsError('ENOSYS', op, ''));

  const fs = {
    constants,
    writeSync(fd, buf) {
      if (fd === 1 || fd === 2) return writeOutput(fd, buf);
      throw fsError('EBADF', 'writeSync', String(fd));
    },
    open(path, flags, mode, cb) {
      call(cb, () => {
        let n = lookup(path);
        if (flags & constants.O_CREAT) {
          if (n && (flags & constants.O_EXCL)) throw fsError('EEXIST', 'open', path);
          if (!n) {
            const [dir, name] = parentOf(path, 'open');
            n = newNode(false, mode);
            dir.children.set(name, n);
            dir.mtimeMs = Date.now();
          }
        }
        if (!n) throw fsError('ENOENT', 'open', path);
        const access = flags & 3;
        if (n.dir && access !== constants.O_RDONLY) throw fsError('EISDIR', 'open', path);
        if (!n.dir && (flags & constants.O_DIRECTORY)) throw fsError('ENOTDIR', 'open', path);
        if (!n.dir && (flags & constants.O_TRUNC) && access !== constants.O_RDONLY) resize(n, 0);
        const fd = nextFd++;
        fds.set(fd, { node: n, flags, pos: 0 });
        return fd;
      });
    },
    close(fd, cb) { call(cb, () => { file(fd, 'close'); fds.delete(fd); }); },
    read(fd, buf, off, len, position, cb) {
      call(cb, () => {
        const f = file(fd, 'read');
        if (f.node.dir) throw fsError('EISDIR', 'read', String(fd));
        if ((f.flags & 3) === constants.O_WRONLY) throw fsError('EBADF', 'read', String(fd));
        const pos = position === null || position === undefined ? f.pos : position;
        const n = Math.max(0, Math.min(len, f.node.size - pos));
        buf.set(f.node.data.subarray(pos, pos + n), off);
        if (position === null || position === undefined) f.pos += n;
        return n;
      });
    },
    write(fd, buf, off, len, position, cb) {
      if (fd === 1 || fd === 2) {
        call(cb, () => writeOutput(fd, buf.subarray(off, off + len)));
        return;
      }
      call(cb, () => {
        const f = file(fd, 'write');
        if ((f.flags & 3) === constants.O_RDONLY) throw fsError('EBADF', 'write', String(fd));
        const n = f.node;
        let pos = position === null || position === undefined ? f.pos : position;
        if (f.flags & constants.O_APPEND) pos = n.size;
        if (pos + len > n.size) resize(n, pos + len);
        n.data.set(buf.subarray(off, off + len), pos);
        n.mtimeMs = Date.now();
        if (position === null || position === undefined) f.pos = pos + len;
        return len;
      });
    },
    fstat(fd, cb) { call(cb, () => stat(file(fd, 'fstat').node)); },
    stat(path, cb) { call(cb, () => stat(must(path, 'stat'))); },
    lstat(path, cb) { call(cb, () => stat(must(path, 'lstat'))); },
    mkdir(path, perm, cb) {
      call(cb, () => {
        const [dir, name] = parentOf(path, 'mkdir');
        if (dir.children.has(name)) throw fsError('EEXIST', 'mkdir', path);
        dir.children.set(name, newNode(true, perm));
        dir.mtimeMs = Date.now();
      });
    },
    readdir(path, cb) {
      call(cb, () => {
        const n = must(path, 'scandir');
        if (!n.dir) throw fsError('ENOTDIR', 'scandir', path);
        return [...n.children.keys()].sort();
      });
    },
    rename(from, to, cb) {
      call(cb, () => {
        const [fdir, fname] = parentOf(from, 'rename');
        const n = fdir.children.get(fname);
        if (!n) throw fsError('ENOENT', 'rename', from);
        const [tdir, tname] = parentOf(to, 'rename');
        for (let a = tdir; n.dir && a; a = parentNode(a)) { // a folder cannot move into itself
          if (a === n) throw fsError('EINVAL', 'rename', to);
        }
        const old = tdir.children.get(tname);
        if (old && old !== n) {
          if (old.dir && !n.dir) throw fsError('EISDIR', 'rename', to);
          if (!old.dir && n.dir) throw fsError('ENOTDIR', 'rename', to);
          if (old.dir && old.children.size > 0) throw fsError('ENOTEMPTY', 'rename', to);
        }
        fdir.children.delete(fname);
        tdir.children.set(tname, n);
        fdir.mtimeMs = tdir.mtimeMs = Date.now();
      });
    },
    unlink(path, cb) {
      call(cb, () => {
        const [dir, name] = parentOf(path, 'unlink');
        const n = dir.children.get(name);
        if (!n) throw fsError('ENOENT', 'unlink', path);
        if (n.dir) throw fsError('EISDIR', 'unlink', path);
        dir.children.delete(name);
      });
    },
    rmdir(path, cb) {
      call(cb, () => {
        const [dir, name] = parentOf(path, 'rmdir');
        const n = dir.children.get(name);
        if (!n) throw fsError('ENOENT', 'rmdir', path);
        if (!n.dir) throw fsError('ENOTDIR', 'rmdir', path);
        if (n.children.size > 0) throw fsError('ENOTEMPTY', 'rmdir', path);
        dir.children.delete(name);
      });
    },
    ftruncate(fd, len, cb) { call(cb, () => resize(file(fd, 'ftruncate').node, len)); },
    truncate(path, len, cb) { call(cb, () => resize(must(path, 'truncate'), len)); },
    fsync(fd, cb) { call(cb, () => { file(fd, 'fsync'); }); },
    chmod(path, mode, cb) { call(cb, () => { const n = must(path, 'chmod'); n.mode = (n.mode & ~0o7777) | (mode & 0o7777); }); },
    fchmod(fd, mode, cb) { call(cb, () => { const n = file(fd, 'fchmod').node; n.mode = (n.mode & ~0o7777) | (mode & 0o7777); }); },
    utimes(path, atime, mtime, cb) { call(cb, () => { const n = must(path, 'utime'); n.atimeMs = atime * 1000; n.mtimeMs = mtime * 1000; }); },
    chown(path, uid, gid, cb) { ok(cb); },
    fchown(fd, uid, gid, cb) { ok(cb); },
    lchown(path, uid, gid, cb) { ok(cb); },
    link: enosys('link'),
    readlink: enosys('readlink'),
    symlink: enosys('symlink'),
  };

  // parentNode finds the folder that holds n (a walk: folders are few).
  function parentNode(n) {
    if (n === root) return null;
    const stack = [root];
    while (stack.length) {
      const d = stack.pop();
      for (const c of d.children.values()) {
        if (c === n) return d;
        if (c.dir) stack.push(c);
      }
    }
    return null;
  }

  function mkdirAll(path) {
    let n = root;
    for (const name of parts(path)) {
      let c = n.children.get(name);
      if (!c) {
        c = newNode(true, 0o755);
        n.children.set(name, c);
      } else if (!c.dir) {
        throw fsError('ENOTDIR', 'mkdir', path);
      }
      n = c;
    }
    return n;
  }

  const memfs = {
    onOutput: null,
    put(path, bytes) {
      const ps = parts(path);
      const name = ps.pop();
      const dir = mkdirAll('/' + ps.join('/'));
      const n = newNode(false, 0o644);
      n.data = bytes;
      n.size = bytes.length;
      dir.children.set(name, n);
    },
    get(path) {
      const n = must(path, 'open');
      if (n.dir) throw fsError('EISDIR', 'read', path);
      return n.data.subarray(0, n.size);
    },
    list(path) {
      const n = must(path, 'scandir');
      if (!n.dir) throw fsError('ENOTDIR', 'scandir', path);
      return [...n.children.keys()].sort();
    },
    remove(path) {
      const ps = parts(path);
      if (ps.length === 0) throw fsError('EPERM', 'remove', path);
      const name = ps.pop();
      const dir = lookup('/' + ps.join('/'));
      if (dir && dir.dir) dir.children.delete(name);
    },
  };
  fs.memfs = memfs;
  globalThis.fs = fs;

  // Go asks the process for its working directory when it resolves a
  // relative path: "/" here. The rest is what wasm_exec.js would set.
  const enosysThrow = () => { throw fsError('ENOSYS', 'process', ''); };
  globalThis.process = globalThis.process || {
    getuid() { return -1; }, getgid() { return -1; }, geteuid() { return -1; }, getegid() { return -1; },
    getgroups: enosysThrow, pid: -1, ppid: -1, umask: enosysThrow,
    cwd() { return '/'; }, chdir: enosysThrow,
  };
})();
