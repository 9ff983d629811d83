// Reading the server's own /metrics (Prometheus text format 0.0.4) in the browser, and turning
// two scrapes into rates and quantiles the way PromQL's rate() and histogram_quantile() do.

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parse exposition text into [{name, labels, value}]; comments and blank lines are skipped. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = SAMPLE.exec(line);
    if (match === null) continue;
    const labels = {};
    for (const [, key, raw] of (match[2] ?? "").matchAll(LABEL)) {
      labels[key] = raw.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** Sum of every sample called `name` (all models, all label values). */
export function total(samples, name) {
  let sum = 0;
  for (const s of samples) if (s.name === name) sum += s.value;
  return sum;
}

/** Cumulative histogram buckets of `name`, summed over every other label: [[le, count], ...]. */
export function buckets(samples, name) {
  const byBound = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const le = Number(s.labels.le);
    byBound.set(le, (byBound.get(le) ?? 0) + s.value);
  }
  return [...byBound.entries()].sort((a, b) => a[0] - b[0]);
}

/** The q-quantile of the observations between two bucket snapshots, interpolating linearly
 * inside the bucket as histogram_quantile() does; null when nothing was observed. */
export function quantile(q, before, after) {
  const old = new Map(before);
  const counts = after.map(([le, n]) => [le, n - (old.get(le) ?? 0)]);
  const observed = counts.length ? counts[counts.length - 1][1] : 0;
  if (observed <= 0) return null;
  const rank = q * observed;
  let lower = 0;
  let below = 0;
  for (const [le, n] of counts) {
    if (n >= rank) {
      if (le === Infinity) return lower; // above the last bound: its value is all we know
      return lower + ((le - lower) * (rank - below)) / Math.max(n - below, 1e-12);
    }
    lower = le;
    below = n;
  }
  return lower;
}

/** One scrape reduced to what the charts need. */
export function snapshot(samples, at) {
  return {
    at,
    requests: total(samples, "infership_requests_total"),
    latency: buckets(samples, "infership_request_duration_seconds"),
    batchRows: total(samples, "infership_batch_size_sum"),
    batches: total(samples, "infership_batch_size_count"),
    queued: total(samples, "infership_queue_depth"),
    inflight: total(samples, "infership_inflight_requests"),
  };
}

/** Chart points between two snapshots: rates over the interval, gauges as of the later one. */
export function between(a, b) {
  const seconds = Math.max((b.at - a.at) / 1000, 1e-3);
  const batches = b.batches - a.batches;
  const p50 = quantile(0.5, a.latency, b.latency);
  const p99 = quantile(0.99, a.latency, b.latency);
  return {
    at: b.at,
    rps: Math.max(b.requests - a.requests, 0) / seconds,
    p50: p50 === null ? null : p50 * 1000,
    p99: p99 === null ? null : p99 * 1000,
    rowsPerBatch: batches > 0 ? (b.batchRows - a.batchRows) / batches : null,
    queued: b.queued,
    inflight: b.inflight,
  };
}
