// The node:http facade (src/runtime/lean-builtins.ts): the same module for ES imports, minus
// the three exports whose getters load Node's bundled undici; require is left alone.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';

const moduleUrl = new URL('../src/runtime/lean-builtins.ts', import.meta.url).href;

t.test('ES imports of node:http get the same module without loading the bundled undici', async (t) => {
  const script = `
    const { registerLeanBuiltins, LAZY_WEB_EXPORTS } = await import(${JSON.stringify(moduleUrl)});
    const { createRequire } = await import('node:module');
    registerLeanBuiltins();
    const ns = await import('node:http');
    const named = await import('http');
    const required = createRequire(import.meta.url)('node:http');
    const expected = Object.keys(required).filter((n) => !LAZY_WEB_EXPORTS.has(n));
    console.log(JSON.stringify({
      missing: expected.filter((n) => !(n in ns)),
      extra: Object.keys(ns).filter((n) => n !== 'default' && !expected.includes(n)),
      sameFunctions: ns.createServer === required.createServer && ns.Agent === required.Agent && ns.request === required.request && named.Server === required.Server,
      defaultIsModule: ns.default === required,
      undici: process.moduleLoadList.some((m) => m.includes('internal/deps/undici')),
    }));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 });
  t.strictSame(JSON.parse(stdout), { missing: [], extra: [], sameFunctions: true, defaultIsModule: true, undici: false });
});

t.test('without the facade, an ES import of node:http does load it (what the facade is for)', async (t) => {
  const script = `await import('node:http'); console.log(process.moduleLoadList.some((m) => m.includes('internal/deps/undici')));`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 });
  t.equal(stdout.trim(), 'true', 'if this fails, Node no longer needs the facade (nodejs/node#59686)');
});
