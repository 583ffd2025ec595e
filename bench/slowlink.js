#!/usr/bin/env node
// bench/slowlink: a TCP relay that behaves like a network link between its
// clients and 127.0.0.1:TARGET: each direction has a one-way DELAY_MS and a
// bandwidth of MBIT, shared by all connections (a queue per direction, as on
// one link). Runs as its own process (the bench times commands with
// spawnSync, which would stop a relay in its own event loop). Prints its port.
//
//   node bench/slowlink.js TARGET_PORT DELAY_MS MBIT
//
// Why not `tc qdisc ... netem` in a network namespace: netem is a kernel
// option (CONFIG_NET_SCH_NETEM) that kernels of VMs and containers often
// lack (this machine's, for one); this needs no root and no module.

import net from 'node:net';

const [target, delayMs, mbit] = process.argv.slice(2).map(Number);
const bytesPerMs = (mbit * 1e6) / 8 / 1000;

/** One direction of the link: when the last byte queued leaves the sender. */
function direction() {
  let free = 0;
  return (len) => {
    const now = performance.now();
    free = Math.max(free, now) + len / bytesPerMs;
    return free + delayMs - now;   // delivered after serialization, plus propagation
  };
}
const up = direction(), down = direction();

/** Pass FROM's data to TO through the link direction LINK, in order, paused while far behind. */
function pipe(from, to, link) {
  const queue = [];   // [deliver at (ms), chunk or null for the end], in order
  let timer = null;
  const drain = () => {
    timer = null;
    const now = performance.now();
    while (queue.length && queue[0][0] <= now) {
      const [, chunk] = queue.shift();
      if (chunk) to.write(chunk); else to.end();
    }
    if (queue.length <= 16) from.resume();
    if (queue.length) timer = setTimeout(drain, queue[0][0] - now);
  };
  const push = (chunk) => {
    queue.push([performance.now() + link(chunk ? chunk.length : 0), chunk]);
    if (queue.length > 64) from.pause();
    if (!timer) timer = setTimeout(drain, queue[0][0] - performance.now());
  };
  from.on('data', push);
  from.on('end', () => push(null));
}

// Half-open allowed: one side's end reaches the other only after the data
// queued before it, through the link.
const srv = net.createServer({ allowHalfOpen: true }, (client) => {
  const server = net.connect({ port: target, host: '127.0.0.1', allowHalfOpen: true });
  for (const s of [client, server]) { s.setNoDelay(true); s.on('error', () => { client.destroy(); server.destroy(); }); }
  pipe(client, server, up);
  pipe(server, client, down);
  let ended = 0;   // both directions ended: done
  for (const s of [client, server]) s.on('finish', () => { if (++ended === 2) { client.destroy(); server.destroy(); } });
});
srv.listen(0, '127.0.0.1', () => process.stdout.write(`${srv.address().port}\n`));
