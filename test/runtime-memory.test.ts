import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';

const run = promisify(execFile);
const moduleUrl = new URL('../src/runtime/memory.ts', import.meta.url).href;

/** releaseBurstMemory() in a fresh node, with the given options, and the heap it leaves. */
async function release(nodeOptions: string[]): Promise<{ ran: boolean; before: number; after: number }> {
  const script = `
    const { releaseBurstMemory } = await import(${JSON.stringify(moduleUrl)});
    const { getHeapStatistics } = await import('node:v8');
    let keep = Array.from({ length: 200000 }, (_, i) => ({ i, s: 'x' + i }));
    keep = null; // garbage the collection can give back
    const before = getHeapStatistics().total_heap_size;
    const ran = releaseBurstMemory();
    console.log(JSON.stringify({ ran, before, after: getHeapStatistics().total_heap_size }));
  `;
  const { stdout } = await run(process.execPath, [...nodeOptions, '--input-type=module', '-e', script], { timeout: 30_000 });
  return JSON.parse(stdout) as { ran: boolean; before: number; after: number };
}

t.test('with --expose-gc (as the image starts node) the burst\'s heap is handed back', async (t) => {
  const r = await release(['--expose-gc']);
  t.equal(r.ran, true);
  t.ok(r.after < r.before, `heap ${r.before} -> ${r.after} bytes`);
});

t.test('without it nothing runs, and nothing fails', async (t) => {
  const r = await release([]);
  t.equal(r.ran, false);
});

/** A heap that keeps 200,000 objects and churns through 2 million more, in a fresh node; its RSS and V8 heap after. */
async function churn(saver: boolean): Promise<{ rss: number; heapTotal: number }> {
  const script = `
    const { favourMemoryFromNowOn } = await import(${JSON.stringify(moduleUrl)});
    const keep = [];
    for (let i = 0; i < 200000; i++) keep.push({ a: 'x' + i, b: [i, i + 1] });
    if (${saver}) favourMemoryFromNowOn();
    let junk;
    for (let r = 0; r < 100; r++) {
      junk = [];
      for (let i = 0; i < 20000; i++) junk.push({ s: 'y' + i + r, n: [i] });
      if (r % 20 === 0) keep.splice(0, 5000);
    }
    const { rss, heapTotal } = process.memoryUsage();
    console.log(JSON.stringify({ rss, heapTotal }));
  `;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 });
  return JSON.parse(stdout) as { rss: number; heapTotal: number };
}

t.test('memory saver mode, switched on at run time, keeps a churning heap small', async (t) => {
  // Checks that V8 still honours the flag when it is set after start (v8.setFlagsFromString):
  // if it were ignored, both runs would hold the same memory.
  const [plain, saver] = await Promise.all([churn(false), churn(true)]);
  const mib = (n: number): string => `${(n / 1048576).toFixed(0)} MiB`;
  t.ok(saver.heapTotal < plain.heapTotal * 0.7, `V8 heap ${mib(plain.heapTotal)} -> ${mib(saver.heapTotal)}`);
  t.ok(saver.rss < plain.rss * 0.7, `RSS ${mib(plain.rss)} -> ${mib(saver.rss)}`);
});
