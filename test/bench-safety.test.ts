// The benches run on developers' machines, in the machine's own network namespace: a daemon
// they start must never write iptables rules or sysctls there. Since --manage-iptables defaults
// to true (as NMI), every daemon command line in bench/ must turn it off.
import { readdir, readFile } from 'node:fs/promises';
import t from 'tap';

const dir = new URL('../bench/', import.meta.url);

t.test('every daemon a bench starts has --manage-iptables=false', async (t) => {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.ts'));
  let daemons = 0;
  for (const file of files) {
    const text = await readFile(new URL(file, dir), 'utf8');
    // A daemon command line names its node; the deployed bench sets the flag through withFlags.
    for (const m of text.matchAll(/'--node=[^']*'[^;]*;/gs)) {
      daemons++;
      t.match(m[0], /--manage-iptables=false/, `${file}: ${m[0].slice(0, 60)}…`);
    }
    if (/withFlags\(\w+\.args/.test(text)) {
      daemons++;
      t.match(text, /'manage-iptables': 'false'/, `${file}: withFlags overrides manage-iptables`);
      // The DaemonSet's --admin-socket is under /var/run: a bench keeps the machine's /var/run clean.
      t.match(text, /'admin-socket': `\/tmp\//, `${file}: withFlags moves the admin socket to /tmp`);
    }
  }
  t.ok(daemons >= 5, `daemon command lines found: ${daemons}`);
});
