import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import t from 'tap';
import { GENERATED_INDEX_IMPORTS, isGeneratedIndexImport } from '../src/cluster/kube-client.ts';

const require = createRequire(import.meta.url);
const configJs = require.resolve('@kubernetes/client-node/dist/config.js');

t.test('the stub covers exactly what client-node\'s config.js imports from its generated index', async (t) => {
  const source = readFileSync(configJs, 'utf8');
  const imports = [...source.matchAll(/import\s*\{([^}]*)\}\s*from\s*'\.\/gen\/index\.js'/g)];
  t.equal(imports.length, 1, 'one import of ./gen/index.js');
  const names = imports[0]![1]!.split(',').map((n) => n.trim()).filter((n) => n !== '');
  t.same(names.sort(), [...GENERATED_INDEX_IMPORTS].sort());
  // ...and those names are used only by makeApiClient.
  const outside = source.replace(/makeApiClient\([^)]*\)\s*\{[\s\S]*?\n {4}\}/, '');
  for (const name of GENERATED_INDEX_IMPORTS) t.equal(outside.split(name).length - 1, 1, `${name} appears only in the import outside makeApiClient`);
});

t.test('only config.js asking for ./gen/index.js is redirected', async (t) => {
  const parent = `file://${configJs}`;
  t.ok(isGeneratedIndexImport('./gen/index.js', parent));
  t.notOk(isGeneratedIndexImport('./gen/index.js', parent.replace('config.js', 'index.js')), 'the package index still loads it');
  t.notOk(isGeneratedIndexImport('./gen/http/http.js', parent));
  t.notOk(isGeneratedIndexImport('./gen/index.js', undefined));
});

t.test('KubeConfig loads, authenticates a request, and no generated model or API client is loaded', async (t) => {
  // A fresh process: this one may have loaded the package index already.
  const script = `
    import { registerHooks } from 'node:module';
    const loaded = [];
    registerHooks({ resolve(s, c, next) { const r = next(s, c); loaded.push(r.url); return r; } });
    const { kubeConfigClass, RequestContext, HttpMethod } = await import(${JSON.stringify(new URL('../src/cluster/kube-client.ts', import.meta.url).href)});
    const KubeConfig = await kubeConfigClass();
    const kc = new KubeConfig();
    kc.loadFromString('apiVersion: v1\\nclusters: [{name: c, cluster: {server: "https://api.example:6443"}}]\\nusers: [{name: u, user: {token: secret-token}}]\\ncontexts: [{name: c, context: {cluster: c, user: u}}]\\ncurrent-context: c\\n');
    const ctx = new RequestContext('https://api.example:6443/api', HttpMethod.GET);
    await kc.applySecurityAuthentication(ctx);
    let makeApiClient = '';
    try { kc.makeApiClient(class {}); } catch (e) { makeApiClient = e.message; }
    console.log(JSON.stringify({
      server: kc.getCurrentCluster().server,
      auth: ctx.getHeaders().Authorization,
      generated: loaded.filter((u) => /client-node\\/dist\\/gen\\/(models|apis|types|index)/.test(u)).length,
      configLoaded: loaded.some((u) => u.endsWith('client-node/dist/config.js')),
      makeApiClient,
    }));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 });
  t.same(JSON.parse(stdout), {
    server: 'https://api.example:6443',
    auth: 'Bearer secret-token',
    generated: 0,
    configLoaded: true,
    makeApiClient: 'podid-nmi loads no generated API clients (KubeConfig.makeApiClient is unavailable)',
  });
});
