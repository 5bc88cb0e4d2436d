import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';

const run = promisify(execFile);
const moduleUrl = new URL('../src/cluster/release-memory.ts', import.meta.url).href;

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
