#!/usr/bin/env node
// node-min.mjs [-s SIGNO] PID...   A minimal Node forwarder, the reference.c loop in
// JavaScript: proc connector (plain LISTEN, its ack, then the fork-only filter),
// 8 MiB buffer, one blocking recvfrom per message on the main thread, one
// pidfd_send_signal per registrant per fork. It shows what Node itself costs on
// this path, apart from anything relayfork does. Prints `ready PID`; SIGTERM ends it.
import { isMainThread, Worker, workerData } from 'node:worker_threads';
import koffi from 'koffi';

// --worker: run the loop in a worker thread, as relayfork does (the main thread idles).
if (isMainThread && process.argv.includes('--worker')) {
  new Worker(new URL(import.meta.url), { workerData: process.argv.slice(2).filter((a) => a !== '--worker'), stdout: false });
  await new Promise(() => {});
}

const libc = koffi.load('libc.so.6');
const socket = libc.func('int socket(int, int, int)');
const bind = libc.func('int bind(int, const void *, uint32_t)');
const setsockopt = libc.func('int setsockopt(int, int, int, const void *, uint32_t)');
const send = libc.func('long send(int, const void *, unsigned long, int)');
const recvfrom = libc.func('long recvfrom(int, void *, unsigned long, int, void *, uint32_t *)');
const pidfdOpen = libc.func('int pidfd_open(int, unsigned int)');
const pidfdSendSignal = libc.func('int pidfd_send_signal(int, int, void *, unsigned int)');

const args = isMainThread ? process.argv.slice(2) : [...workerData];
let signo = 34;
if (args[0] === '-s') { signo = Number(args[1]); args.splice(0, 2); }
const pidfds = args.map((p) => {
  const fd = pidfdOpen(Number(p), 0);
  if (fd < 0) { console.error(`node-min: pidfd_open ${p}: errno ${koffi.errno()}`); process.exit(1); }
  return fd;
});

const fd = socket(16 /* AF_NETLINK */, 2 | 0o2000000 /* SOCK_DGRAM|CLOEXEC */, 11 /* NETLINK_CONNECTOR */);
const sa = Buffer.alloc(12);
sa.writeUInt16LE(16, 0); // nl_family
sa.writeUInt32LE(1, 8); // nl_groups = CN_IDX_PROC
if (fd < 0 || bind(fd, sa, 12) < 0) { console.error(`node-min: netlink: errno ${koffi.errno()}`); process.exit(1); }
const size = Buffer.alloc(4);
size.writeInt32LE(8 << 20, 0);
setsockopt(fd, 1, 33 /* SO_RCVBUFFORCE */, size, 4);

// struct nlmsghdr (16) + struct cn_msg (20) + op (4) [+ mask (4)]
function subscribe(tag, oplen) {
  const len = 16 + 20 + oplen;
  const r = Buffer.alloc(len);
  r.writeUInt32LE(len, 0);
  r.writeUInt16LE(3 /* NLMSG_DONE */, 4);
  r.writeUInt32LE(process.pid, 12);
  r.writeUInt32LE(1, 16); // cn idx CN_IDX_PROC
  r.writeUInt32LE(1, 20); // cn val CN_VAL_PROC
  r.writeUInt32LE(tag, 28); // ack
  r.writeUInt16LE(oplen, 32);
  r.writeUInt32LE(1 /* PROC_CN_MCAST_LISTEN */, 36);
  if (oplen === 8) r.writeUInt32LE(1 /* PROC_EVENT_FORK */, 40);
  if (send(fd, r, len, 0) < 0) { console.error(`node-min: send: errno ${koffi.errno()}`); process.exit(1); }
}

const buf = Buffer.alloc(65536);
const from = Buffer.alloc(12);
const fromLen = new Uint32Array(1);
const tag = (process.pid * 2654435761) >>> 0;
subscribe(tag, 4);
for (;;) {
  fromLen[0] = 12;
  if (recvfrom(fd, buf, buf.length, 0, from, fromLen) < 0) continue;
  // cn_msg.ack at 16+12; proc_event.what at 16+20
  if (buf.readUInt32LE(36) === 0 && buf.readUInt32LE(28) === ((tag + 1) >>> 0)) break;
}
subscribe((tag + 2) >>> 0, 8);

const si = Buffer.alloc(128);
si.writeInt32LE(signo, 0);
si.writeInt32LE(-4 /* SI_ASYNCIO */, 8);
console.log(`ready ${process.pid}`);
for (;;) {
  fromLen[0] = 12;
  let len = recvfrom(fd, buf, buf.length, 0, from, fromLen);
  if (len < 0 || from.readUInt32LE(4) !== 0) continue;
  for (let off = 0; len >= 16; ) {
    const n = buf.readUInt32LE(off);
    if (n < 16 || n > len) break;
    // proc_event at off+36: what(4) cpu(4) timestamp(8), then fork: parent_pid parent_tgid child_pid child_tgid
    if (buf.readUInt32LE(off + 36) === 1 /* PROC_EVENT_FORK */) {
      const childPid = buf.readInt32LE(off + 60);
      if (childPid === buf.readInt32LE(off + 64)) {
        si.writeInt32LE(buf.readInt32LE(off + 56), 16); // si_pid = parent_tgid
        si.writeInt32LE(childPid, 24); // si_value = child pid
        for (let i = 0; i < pidfds.length; i++) pidfdSendSignal(pidfds[i], signo, si, 0);
      }
    }
    const step = (n + 3) & ~3;
    off += step;
    len -= step;
  }
}
