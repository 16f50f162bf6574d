// relayfork as a system service: the unit file, and the daemon run the way the unit
// runs it — as user nobody with only the unit's capabilities and no_new_privs —
// mounting, subscribing and relaying to a real receiver; then with each capability
// missing in turn. The capability set is read from scripts/relayfork.service, so the
// unit cannot drift from what is tested here.
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  AF_UNIX, bind, close, MSG_DONTWAIT, recvFrom, SOCK_CLOEXEC, SOCK_DGRAM, socket,
} from '../../src/kernel/syscalls.js';
import { encodeSockaddrUn } from '../../src/sd-notify.js';
import { cleanupAll, CLI, ensureBuilt, makeMountDir, runCli, startDaemon, type Daemon } from '../helpers/daemon.js';
import { asUserWithCaps, capMask, confine, NOBODY, processCreds, view, type Confinement } from '../helpers/confine.js';
import { forkTrue, readText, sleep, writeCtl } from '../helpers/fsio.js';
import { compileHelper, REPO_ROOT } from '../helpers/native.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { environment, get, list, readUnit, setprivCap, UNIT_PATH, type Unit } from '../helpers/unit-file.js';
import { SI_ASYNCIO, hasTool } from '../helpers/common.js';

const execFileAsync = promisify(execFile);
const THE_THREE = ['CAP_SYS_ADMIN', 'CAP_NET_ADMIN', 'CAP_KILL'];

const [haveSystemdAnalyze, haveStrace] = await Promise.all([hasTool('systemd-analyze'), hasTool('strace')]);

let unit: Unit;
let unitCaps: string[];
const confinements: Confinement[] = [];

beforeAll(async () => {
  await Promise.all([compileHelper('receiver'), ensureBuilt()]);
  unit = await readUnit();
  unitCaps = list(unit, 'Service', 'CapabilityBoundingSet');
}, 120_000);
afterEach(async () => {
  await cleanupAll();
  for (const c of confinements.splice(0)) await c.release();
});
afterAll(cleanupAll);

/** The daemon argv confined as the unit runs it, minus `dropped` capabilities. */
async function confined(opts: { dropped?: string[]; fuseMode?: number } = {}): Promise<Confinement> {
  const caps = unitCaps.filter((c) => !(opts.dropped ?? []).includes(c)).map(setprivCap);
  const c = await confine({ uid: NOBODY, caps, ...(opts.fuseMode === undefined ? {} : { fuseMode: opts.fuseMode }) });
  confinements.push(c);
  return c;
}

const ctl = (d: Daemon, file: string): string => view(d.pid, path.join(d.dir, file));

async function settle(r: Receiver, children: number[]): Promise<void> {
  await r.waitFor((sigs) => children.every((c) => sigs.some((s) => s.value === c)), 5000);
  await sleep(300);
}

describe('scripts/relayfork.service', () => {
  it('runs `relayfork mount` on a configurable directory, /run/relayfork by default, as Type=notify', () => {
    const exec = get(unit, 'Service', 'ExecStart')!;
    expect(exec).toMatch(/^\/\S+\/relayfork mount \$\{RELAYFORK_DIR\} \$RELAYFORK_OPTS$/);
    expect(environment(unit)).toEqual({ RELAYFORK_DIR: '/run/relayfork', RELAYFORK_OPTS: '' });
    expect(get(unit, 'Service', 'RuntimeDirectory')).toBe('relayfork');
    expect(get(unit, 'Service', 'RuntimeDirectoryMode')).toBe('0755'); // others traverse to the files
    expect(get(unit, 'Service', 'Type')).toBe('notify');
    expect(get(unit, 'Install', 'WantedBy')).toBe('multi-user.target'); // started at boot once enabled
  });

  it('restarts on failure but not on a usage error, stops with SIGTERM, logs to the journal', () => {
    expect(get(unit, 'Service', 'Restart')).toBe('on-failure');
    expect(get(unit, 'Service', 'RestartPreventExitStatus')).toBe('2');
    expect(get(unit, 'Service', 'KillSignal') ?? 'SIGTERM').toBe('SIGTERM');
    expect(get(unit, 'Service', 'StandardOutput') ?? 'journal').toBe('journal');
    expect(get(unit, 'Service', 'StandardError') ?? 'inherit').toMatch(/^(journal|inherit)$/);
  });

  it('runs as a non-root user with exactly CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_KILL, and no_new_privs', () => {
    const user = get(unit, 'Service', 'User');
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    expect(unitCaps.slice().sort()).toEqual(THE_THREE.slice().sort());
    expect(list(unit, 'Service', 'AmbientCapabilities').sort()).toEqual(unitCaps.slice().sort());
    expect(get(unit, 'Service', 'NoNewPrivileges')).toBe('yes');
    expect(list(unit, 'Service', 'DeviceAllow')).toEqual(['/dev/fuse', 'rw']);
    expect(get(unit, 'Service', 'DevicePolicy')).toBe('closed');
  });

  it('uses no directive that puts the service in a mount namespace of its own, which would hide the mount', () => {
    // systemd.exec(5), PrivateMounts=: each of these turns mount propagation to the
    // host off, so the FUSE mount would exist only inside the service.
    const namespacing = [
      'PrivateMounts', 'PrivateTmp', 'PrivateDevices', 'ProtectSystem', 'ProtectHome', 'ReadOnlyPaths',
      'ReadWritePaths', 'InaccessiblePaths', 'ExecPaths', 'NoExecPaths', 'BindPaths', 'BindReadOnlyPaths',
      'TemporaryFileSystem', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectKernelLogs',
      'ProtectControlGroups', 'ProtectHostname', 'ProtectProc', 'ProcSubset', 'MountAPIVFS', 'RootDirectory',
      'RootImage', 'DynamicUser', 'MountFlags', 'PrivateNetwork', 'PrivateUsers', 'NetworkNamespacePath',
      'MemoryDenyWriteExecute',
    ];
    const used = [...(unit.get('Service')?.keys() ?? [])].filter((k) => namespacing.includes(k));
    expect(used).toEqual([]);
  });

  it.skipIf(!haveSystemdAnalyze)('passes systemd-analyze verify without a warning', async () => {
    // verify checks that ExecStart's program exists: point it at this build.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relayfork-unit-'));
    try {
      const text = (await readFile(UNIT_PATH, 'utf8')).replace(/^ExecStart=\S+/m, `ExecStart=${CLI}`);
      await writeFile(path.join(dir, 'relayfork.service'), text);
      const res = await execFileAsync('systemd-analyze', ['verify', path.join(dir, 'relayfork.service')], { timeout: 20_000 })
        .then((r) => ({ code: 0, out: r.stdout + r.stderr }), (e: { code?: number; stdout?: string; stderr?: string }) =>
          ({ code: e.code, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
      // verify exits 0 even for an unknown value; a warning is a failure here.
      expect(res).toEqual({ code: 0, out: '' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!haveSystemdAnalyze || !haveStrace)('allows every system call the daemon makes (strace vs SystemCallFilter)', async () => {
    const res = await execFileAsync(path.join(REPO_ROOT, 'scripts', 'check-syscall-filter.sh'), [], { timeout: 60_000 })
      .then((r) => ({ code: 0, out: r.stdout + r.stderr }), (e: { code?: number; stdout?: string; stderr?: string }) =>
        ({ code: e.code, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
    expect(res.out).toMatch(/outside the filter: 0/);
    expect(res.code).toBe(0);
  }, 90_000);
});

describe('the daemon as the unit runs it: user nobody, only the unit\'s capabilities, no_new_privs', () => {
  it('mounts, subscribes to the proc connector and relays forks to another user\'s process; SIGTERM unmounts, exit 0', async () => {
    const c = await confined();
    const d = await startDaemon({ prefix: c.wrap });

    const creds = await processCreds(d.pid);
    expect(creds.Uid!.split(/\s+/)).toEqual(Array(4).fill(String(NOBODY)));
    const want = capMask(unitCaps);
    for (const set of ['CapEff', 'CapPrm', 'CapInh', 'CapAmb', 'CapBnd']) {
      expect({ set, mask: BigInt(`0x${creds[set]}`) }).toEqual({ set, mask: want });
    }
    expect(creds.NoNewPrivs).toBe('1');

    const mounts = await readFile(`/proc/${d.pid}/mounts`, 'utf8');
    const mine = mounts.split('\n').filter((l) => l.split(' ')[1] === d.mnt);
    expect(mine).toHaveLength(1);
    expect(mine[0]).toContain('fuse.relayfork');
    expect(mine[0]).toContain(`user_id=${NOBODY}`);
    expect(d.logs.find((l) => l.msg === 'fork source ready')).toMatchObject({ source: 'netlink' });
    expect(d.logs.some((l) => l.level === 40)).toBe(false); // nothing to warn about

    const r = await startReceiver(34); // root's process: takes CAP_KILL to signal
    expect(await writeCtl(ctl(d, 'processes'), `${r.pid}\n`)).toBeNull();
    expect(await readText(ctl(d, 'processes'))).toBe(`${r.pid}\n`);
    const children = [await forkTrue(), await forkTrue(), await forkTrue()];
    await settle(r, children);
    for (const child of children) {
      expect(r.signals.filter((s) => s.value === child)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }]);
    }

    expect(await d.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(d.logs.some((l) => l.msg === 'unmounted')).toBe(true);
    expect(d.stderr()).toBe('');
  });

  it('without CAP_SYS_ADMIN: exits 1 with one line naming CAP_SYS_ADMIN', async () => {
    const c = await confined({ dropped: ['CAP_SYS_ADMIN'] });
    const res = await runCli(['mount', await makeMountDir()], 15_000, { prefix: c.wrap });
    expect({ code: res.code, timedOut: res.timedOut }).toEqual({ code: 1, timedOut: false });
    expect(res.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(res.stderr).toContain('CAP_SYS_ADMIN');
    expect(res.stdout).not.toContain('"msg":"mounted"');
  });

  it('without CAP_NET_ADMIN, --source netlink: exits 1 with one line naming CAP_NET_ADMIN', async () => {
    const c = await confined({ dropped: ['CAP_NET_ADMIN'] });
    const res = await runCli(['mount', await makeMountDir(), '--source', 'netlink'], 15_000, { prefix: c.wrap });
    expect({ code: res.code, timedOut: res.timedOut }).toEqual({ code: 1, timedOut: false });
    expect(res.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(res.stderr).toContain('CAP_NET_ADMIN');
    expect(res.stdout).not.toContain('"msg":"mounted"');
  });

  it('without CAP_KILL: warns naming CAP_KILL, refuses another user\'s PID with EPERM, relays to its own user\'s', async () => {
    const c = await confined({ dropped: ['CAP_KILL'] });
    const d = await startDaemon({ prefix: c.wrap });
    expect(d.logs.find((l) => l.level === 40 && String(l.msg).includes('CAP_KILL'))).toBeDefined();

    const rootOwned = await startReceiver(34);
    expect(await writeCtl(ctl(d, 'processes'), `${rootOwned.pid}\n`)).toBe('EPERM');
    const own = await startReceiver(34, { prefix: asUserWithCaps(NOBODY, []) });
    // All or nothing: the refused PID takes the allowed one down with it.
    expect(await writeCtl(ctl(d, 'processes'), `${own.pid} ${rootOwned.pid}\n`)).toBe('EPERM');
    expect(await readText(ctl(d, 'processes'))).toBe('\n');

    expect(await writeCtl(ctl(d, 'processes'), `${own.pid}\n`)).toBeNull();
    const child = await forkTrue();
    await settle(own, [child]);
    expect(own.signals.filter((s) => s.value === child)).toEqual([{ signo: 34, code: SI_ASYNCIO, pid: process.pid, value: child }]);
    expect(rootOwned.signals).toEqual([]);
    expect(await d.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });

  it('without read-write access to /dev/fuse: exits 1 with one line naming /dev/fuse', async () => {
    const c = await confined({ fuseMode: 0o600 }); // root's, as on a host without udev
    const res = await runCli(['mount', await makeMountDir()], 15_000, { prefix: c.wrap });
    expect({ code: res.code, timedOut: res.timedOut }).toEqual({ code: 1, timedOut: false });
    expect(res.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(res.stderr).toMatch(/\/dev\/fuse \(EACCES\).*uid 65534/);
  });
});

describe('systemd readiness (Type=notify)', () => {
  it('sends READY=1 to $NOTIFY_SOCKET once mounted, and STOPPING=1 at SIGTERM', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relayfork-notify-'));
    const sockPath = path.join(dir, 'notify');
    const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    try {
      bind(fd, encodeSockaddrUn(sockPath));
      await chmod(sockPath, 0o666);
      const received: string[] = [];
      const buf = Buffer.alloc(4096);
      const addr = Buffer.alloc(112);
      const addrLen = new Uint32Array(1);
      const drain = () => {
        for (let n = recvFrom(fd, buf, MSG_DONTWAIT, addr, addrLen); n >= 0; n = recvFrom(fd, buf, MSG_DONTWAIT, addr, addrLen)) {
          received.push(buf.toString('utf8', 0, n));
        }
      };
      const waitFor = async (what: string) => {
        for (let i = 0; i < 100 && !received.some((m) => m.split('\n').includes(what)); i++) {
          drain();
          await sleep(50);
        }
        return received;
      };

      const d = await startDaemon({ env: { ...process.env, NOTIFY_SOCKET: sockPath } });
      const ready = (await waitFor('READY=1')).find((m) => m.startsWith('READY=1'));
      expect(ready).toBe(`READY=1\nSTATUS=serving ${d.mnt}`);
      // The files exist by the time READY=1 is sent: a unit ordered after this one can use them.
      expect(await readText(path.join(d.dir, 'signal'))).toBe('34\n');

      expect(await d.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(await waitFor('STOPPING=1')).toContain('STOPPING=1');
    } finally {
      close(fd);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('for people: --help and the log format', () => {
  it('--help reads like a man page: commands, every option with its default, files, exit status, an example', async () => {
    const res = await runCli(['--help']);
    expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: '' });
    const sections = res.stdout.split('\n').filter((l) => /^[A-Z][A-Z ]+$/.test(l));
    expect(sections).toEqual(['NAME', 'SYNOPSIS', 'DESCRIPTION', 'COMMANDS', 'OPTIONS', 'FILES', 'PRIVILEGES', 'EXIT STATUS', 'EXAMPLE', 'SEE ALSO']);
    const section = (name: string) => res.stdout.split(`\n${name}\n`)[1]!.split(/\n[A-Z][A-Z ]+\n/)[0]!;
    for (const opt of ['--signal', '--source', '--poll-interval', '--threads', '--log-level', '--log-format', '--help', '--version']) {
      expect(section('OPTIONS')).toContain(opt);
    }
    for (const [opt, dflt] of [['--signal', 'Default 34'], ['--source', 'Default auto'], ['--log-level', 'Default info'], ['--log-format', 'Default']]) {
      const text = section('OPTIONS').split(/\n    --|\n    -h/).find((t) => `    --${t}`.includes(opt!.slice(2)));
      expect({ opt, hasDefault: text?.includes(dflt!) }).toEqual({ opt, hasDefault: true });
    }
    for (const f of ['processes', 'signal', 'stats', 'events', '/dev/fuse']) expect(section('FILES')).toContain(f);
    for (const cap of THE_THREE) expect(section('PRIVILEGES')).toContain(cap);
    expect(section('EXIT STATUS')).toMatch(/0 .*\n[\s\S]*1 .*\n[\s\S]*2 .*usage/);
    expect(section('EXAMPLE')).toContain('relayfork mount');
    // 80 columns, but for the default mount point, a path as long as the install's.
    expect(res.stdout.split('\n').filter((l) => l.length > 80 && !l.trim().endsWith('/mount'))).toEqual([]);
  });

  it('--log-format pretty writes one readable line per record; json (the default off a terminal) writes pino JSON', async () => {
    const mnt = await makeMountDir();
    const proc = spawn(process.execPath, [CLI, 'mount', mnt, '--log-format', 'pretty'], {
      cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' },
    });
    let out = '';
    proc.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    const exited = new Promise<number | null>((r) => proc.on('close', (code) => r(code)));
    try {
      for (let i = 0; i < 200 && !out.includes('daemon: mounted'); i++) await sleep(50);
      expect(out).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: daemon: mounted \{"mountpoint":/m);
      expect(out).toMatch(/INFO: daemon: fork source ready \{"source":"netlink"/);
      proc.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(out).toMatch(/INFO: daemon: unmounted/);
      for (const line of out.split('\n').filter(Boolean)) expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|DEBUG): /);
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });

  it('is pretty by default when stdout is a terminal (under script(1)), with an expected error on one line', async (ctx) => {
    if (!(await hasTool('script'))) ctx.skip();
    // `mount /` is refused at start: a quick, logged failure.
    const res = await execFileAsync('script', ['-qec', `${process.execPath} ${CLI} mount /`, '/dev/null'], {
      env: { ...process.env, NO_COLOR: '1' }, timeout: 20_000,
    }).then((r) => ({ code: 0, out: r.stdout }), (e: { code?: number; stdout?: string }) => ({ code: e.code, out: e.stdout ?? '' }));
    expect(res.code).toBe(2);
    const lines = res.out.replace(/\r/g, '').split('\n').filter(Boolean);
    expect(lines).toEqual([
      expect.stringMatching(/^\[\d\d:\d\d:\d\d\.\d{3}\] ERROR: could not start \(refusing to mount over \/\)$/),
      'relayfork: refusing to mount over /',
    ]);
    // The same off a terminal: a JSON record.
    const plain = await runCli(['mount', '/']);
    expect(plain.code).toBe(2);
    expect(JSON.parse(plain.stdout.trim())).toMatchObject({ level: 50, msg: 'could not start' });
  });

  it('refuses an unknown --log-format with a usage error', async () => {
    const res = await runCli(['mount', await makeMountDir(), '--log-format', 'yaml']);
    expect(res.code).toBe(2);
    expect(res.stderr).toBe('relayfork: --log-format must be one of json, pretty (see relayfork --help)\n');
  });
});
