// Pure analysis of the benchmark's logs: the storm's `child_pid t_before_fork`
// lines, the receivers' `si_pid si_value t_at_read` lines, and summary statistics.
// No I/O here: callers read the files and pass Buffers.

/** Calls fn(a, b, c) for every line of up to three decimal integers ('#' lines: fn(null, …)). */
function eachLine(buf, fn) {
  const n = buf.length;
  let i = 0;
  const nums = [0, 0, 0];
  while (i < n) {
    if (buf[i] === 0x23 /* # */) {
      const start = i;
      while (i < n && buf[i] !== 0x0a) i++;
      fn(null, buf.toString('latin1', start, i));
      i++;
      continue;
    }
    let k = 0;
    let v = 0;
    let neg = false;
    let inNum = false;
    for (; i < n && buf[i] !== 0x0a; i++) {
      const c = buf[i];
      if (c === 0x2d /* - */) {
        neg = true;
      } else if (c >= 0x30 && c <= 0x39) {
        v = v * 10 + (c - 0x30);
        inNum = true;
      } else if (inNum) {
        if (k < 3) nums[k++] = neg ? -v : v;
        v = 0;
        neg = false;
        inNum = false;
      }
    }
    if (inNum && k < 3) nums[k++] = neg ? -v : v;
    i++;
    if (k > 0) fn(k, nums);
  }
}

/**
 * The storm log: `# parent PID` headers, then `child_pid t_ns` lines.
 * Returns { parents: Set<number>, forks: number, byChild: Map<pid, number[] sorted times> }.
 */
export function parseStormLog(buf) {
  const parents = new Set();
  const byChild = new Map();
  let forks = 0;
  eachLine(buf, (k, v) => {
    if (k === null) {
      const m = /^# parent (\d+)/.exec(v);
      if (m) parents.add(Number(m[1]));
      return;
    }
    if (k < 2) return;
    forks++;
    const list = byChild.get(v[0]);
    if (list) list.push(v[1]);
    else byChild.set(v[0], [v[1]]);
  });
  for (const list of byChild.values()) if (list.length > 1) list.sort((a, b) => a - b);
  return { parents, forks, byChild };
}

/**
 * A receiver's log, keeping only signals whose si_pid is one of the storm's
 * parents (the host forks for everyone; other processes' forks are not ours).
 * Returns { received: all lines, ours: number, byChild: Map<pid, number[] sorted times> }
 * (byChild stays empty with { times: false }: counting only).
 */
export function parseReceiverLog(buf, parents, { times = true } = {}) {
  const byChild = new Map();
  let received = 0;
  let ours = 0;
  eachLine(buf, (k, v) => {
    if (k === null || k < 3) return;
    received++;
    if (!parents.has(v[0])) return;
    ours++;
    if (!times) return;
    const list = byChild.get(v[1]);
    if (list) list.push(v[2]);
    else byChild.set(v[1], [v[2]]);
  });
  for (const list of byChild.values()) if (list.length > 1) list.sort((a, b) => a - b);
  return { received, ours, byChild };
}

/**
 * fork() → signal-read latencies in ns. A PID is reused as the host forks on, so
 * each read is matched to the latest fork of that child PID at or before it, and
 * each fork is matched at most once.
 */
export function matchLatencies(storm, recv) {
  const out = [];
  for (const [child, reads] of recv.byChild) {
    const forks = storm.byChild.get(child);
    if (!forks) continue;
    let i = -1;
    let used = -1;
    for (const r of reads) {
      while (i + 1 < forks.length && forks[i + 1] <= r) i++;
      if (i < 0 || i === used) continue;
      out.push(r - forks[i]);
      used = i;
    }
  }
  return out;
}

/** The q-quantile (0..1) of numbers, nearest rank; NaN when empty. Sorts a copy. */
export function quantile(values, q) {
  if (values.length === 0) return NaN;
  const s = Float64Array.from(values).sort();
  const idx = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[idx];
}

export const median = (values) => {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return NaN;
  const s = Float64Array.from(v).sort();
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** `key=value` pairs of one line, numbers where they parse. */
export function parseKv(line) {
  const out = {};
  for (const m of line.matchAll(/(\w+)=(\S+)/g)) {
    const n = Number(m[2]);
    out[m[1]] = Number.isFinite(n) ? n : m[2];
  }
  return out;
}

/** utime + stime (clock ticks) from the text of /proc/PID/stat; comm may hold spaces or ')'. */
export function parseProcStat(text) {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): utime is field 14, stime field 15.
  return { utime: Number(rest[11]), stime: Number(rest[12]) };
}

/**
 * A self time profile from a V8 .cpuprofile: [{ name, url, line, selfMs, pct }],
 * the heaviest first (samples × sampling interval).
 */
export function topFunctions(profile, limit = 15) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const counts = new Map();
  for (const id of profile.samples ?? []) counts.set(id, (counts.get(id) ?? 0) + 1);
  const total = profile.samples?.length ?? 0;
  const intervalMs = total > 1 ? (profile.endTime - profile.startTime) / 1000 / total : 0;
  const agg = new Map();
  for (const [id, c] of counts) {
    const cf = byId.get(id)?.callFrame;
    if (!cf) continue;
    const key = `${cf.functionName || '(anonymous)'}\u0000${cf.url}\u0000${cf.lineNumber}`;
    agg.set(key, (agg.get(key) ?? 0) + c);
  }
  return [...agg.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([key, c]) => {
      const [name, url, line] = key.split('\u0000');
      return { name, url, line: Number(line) + 1, samples: c, selfMs: c * intervalMs, pct: (100 * c) / total };
    });
}
