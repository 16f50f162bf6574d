// The npm package: `npm pack` holds what the daemon needs to run and nothing else,
// and the tarball installs into a fresh directory with `npm install <tarball>` (no
// compiler: dist/ is shipped, `prepare` does not run for a tarball, and TypeScript,
// a devDependency, is not installed), then runs: --version, --help, and a real mount
// that relays a fork to a real receiver.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, ensureBuilt, startDaemon } from '../helpers/daemon.js';
import { forkTrue, readText, writeCtl } from '../helpers/fsio.js';
import { compileHelper, REPO_ROOT } from '../helpers/native.js';
import { startReceiver } from '../helpers/receiver.js';
import { SI_ASYNCIO, exists } from '../helpers/common.js';

const execFileAsync = promisify(execFile);

let tmp: string;
let tarball: string;
let packed: string[];

/** Every src/**\/*.ts as the dist/**\/*.js tsc makes of it. */
async function expectedDist(): Promise<string[]> {
  const src = path.join(REPO_ROOT, 'src');
  const entries = await readdir(src, { recursive: true });
  return entries.filter((f) => f.endsWith('.ts')).map((f) => `dist/${f.replace(/\.ts$/, '.js')}`);
}

beforeAll(async () => {
  await Promise.all([ensureBuilt(), compileHelper('receiver')]);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'relayfork-pack-'));
  // --ignore-scripts: the build is already fresh (ensureBuilt), and prepack would
  // delete dist/ under any other test reading it. `npm pack` by hand builds clean.
  const { stdout } = await execFileAsync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], {
    cwd: REPO_ROOT,
    maxBuffer: 16 * 1024 * 1024,
  });
  const [info] = JSON.parse(stdout) as [{ filename: string; files: { path: string }[] }];
  tarball = path.join(tmp, info.filename);
  packed = info.files.map((f) => f.path).sort();
}, 120_000);
afterAll(async () => {
  await cleanupAll();
  await rm(tmp, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('holds the built daemon, its command, README, package.json and the systemd unit; no sources, tests or maps', async () => {
    const want = [
      'README.md', 'package.json', 'bin/relayfork.js', 'scripts/relayfork.service',
      ...(await expectedDist()),
      ...((await exists(path.join(REPO_ROOT, 'LICENSE'))) ? ['LICENSE'] : []),
    ].sort();
    expect(packed).toEqual(want);
  });

  it('installs into a fresh directory without building, and the installed command runs and relays', async () => {
    const app = path.join(tmp, 'app');
    await mkdir(app);
    await execFileAsync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
      cwd: app,
      timeout: 240_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    const pkg = path.join(app, 'node_modules', 'relayfork');
    expect(await exists(path.join(pkg, 'dist', 'cli.js'))).toBe(true);
    expect(await exists(path.join(pkg, 'src'))).toBe(false);
    expect(await exists(path.join(app, 'node_modules', 'typescript'))).toBe(false); // nothing was compiled

    const bin = path.join(app, 'node_modules', '.bin', 'relayfork');
    const version = await execFileAsync(bin, ['--version'], { cwd: app });
    expect(version.stdout).toBe('relayfork 0.1.0\n');
    const help = await execFileAsync(bin, ['--help'], { cwd: app });
    expect(help.stdout).toMatch(/^RELAYFORK\(8\)/);

    const d = await startDaemon({ cli: path.join(pkg, 'bin', 'relayfork.js') });
    expect(d.logs.find((l) => l.msg === 'mounted')).toBeDefined();
    expect(await readText(path.join(d.dir, 'signal'))).toBe('34\n');
    const r = await startReceiver(34);
    expect(await writeCtl(path.join(d.dir, 'processes'), `${r.pid}\n`)).toBeNull();
    const child = await forkTrue();
    await r.waitFor((s) => s.some((x) => x.value === child));
    expect(r.signals.filter((s) => s.value === child)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }]);
    expect(await d.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  }, 300_000);
});
