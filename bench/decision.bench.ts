// The pure hot path, in process: matcher -> query -> token parameters -> pod lookup -> decision,
// with 250 pods on the node and 20,000 identities and bindings in the cluster, in managed mode
// and in standard mode (one MIC AzureAssignedIdentity per pod). Bounded by count.
// Run: node_modules/.bin/node bench/decision.bench.ts
//      node_modules/.bin/node bench/decision.bench.ts --compare=0a77530 [--rounds=5]
//        and another build (a commit, its src/ extracted with git archive, or a checkout's
//        directory), each round in a fresh process per build, alternating (A B, B A, ...):
//        ratios are this build / the other, from the same run.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

type Modules = {
  index: typeof import('../src/cluster/cluster-index.ts');
  decide: typeof import('../src/decision/decide.ts');
  tokenRequest: typeof import('../src/decision/token-request.ts');
  query: typeof import('../src/matcher/query.ts');
  target: typeof import('../src/matcher/request-target.ts');
  lookup: typeof import('../src/pods/pod-lookup.ts');
};

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const IDENTITIES = 20_000;
const PODS = 250;
const N = 2_000_000;
const option = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);

async function load(src: string): Promise<Modules> {
  return {
    index: await import(`${src}/cluster/cluster-index.ts`),
    decide: await import(`${src}/decision/decide.ts`),
    tokenRequest: await import(`${src}/decision/token-request.ts`),
    query: await import(`${src}/matcher/query.ts`),
    target: await import(`${src}/matcher/request-target.ts`),
    lookup: await import(`${src}/pods/pod-lookup.ts`),
  };
}

/** ns per token request, managed then standard mode. */
function run(m: Modules): { managed: number; standard: number; heapMiB: number } {
  const index = new m.index.ClusterIndex();
  for (let i = 0; i < IDENTITIES; i++) {
    const ns = `ns${i % 200}`;
    index.upsertIdentity({ namespace: ns, name: `id${i}`, type: 0, clientID: `client-${i}`, resourceID: `/r/${i}` });
    index.upsertBinding({ namespace: ns, name: `b${i}`, azureIdentity: `id${i}`, selector: `sel${i}` });
  }
  const ips: string[] = [];
  for (let i = 0; i < PODS; i++) {
    const ip = `10.244.${i >> 8}.${i & 255}`;
    ips.push(ip);
    index.upsertPod({ uid: `u${i}`, namespace: `ns${i % 200}`, name: `p${i}`, labels: { aadpodidbinding: `sel${i}` }, ips: [ip], phase: 'Running', hostNetwork: false, nodeName: 'n' });
    index.upsertAssigned({
      namespace: 'default', name: `p${i}-ns${i % 200}-id${i}`, pod: `p${i}`, podNamespace: `ns${i % 200}`, nodeName: 'n', state: 'Assigned',
      identity: index.identity(`ns${i % 200}`, `id${i}`)!, bindingSelector: `sel${i}`,
    });
  }
  const STANDARD = { mode: 'standard', forceNamespaced: false } as const;
  const targets = ips.map((_, i) => `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id=client-${i}`);
  const { matchTarget } = m.target;
  const { parseQuery } = m.query;
  const { parseTokenRequest } = m.tokenRequest;
  const { lookupPodNow } = m.lookup;
  const { decideToken, MANAGED } = m.decide;
  type Policy = typeof MANAGED;

  function once(i: number, policy: Policy): string {
    const matched = matchTarget(targets[i]!, false);
    if (typeof matched === 'string') return matched;
    const q = parseQuery(matched.rawQuery);
    if (typeof q === 'string') return q;
    const r = parseTokenRequest(q);
    if (typeof r === 'string') return r;
    const found = lookupPodNow(index, ips[i]!);
    if (found === undefined || found.kind === 'refuse') return 'no pod';
    return decideToken(found.pod, index, r, policy).kind;
  }

  function measure(policy: Policy): number {
    // Sanity: every request is granted, so the benchmark measures the full path.
    for (let i = 0; i < PODS; i++) if (once(i, policy) !== 'grant') throw new Error(`${policy.mode}: request ${i} not granted: ${once(i, policy)}`);
    for (let i = 0; i < 200_000; i++) once(i % PODS, policy);
    const started = process.hrtime.bigint();
    for (let i = 0; i < N; i++) once(i % PODS, policy);
    return Number(process.hrtime.bigint() - started) / N;
  }

  const managed = measure(MANAGED);
  const standard = measure(STANDARD);
  return { managed, standard, heapMiB: process.memoryUsage().heapUsed / 2 ** 20 };
}

/** A commit's src/ beside this checkout's node_modules, or a checkout's directory as it is. */
function sourceOf(ref: string): { src: string; remove(): void } {
  if (existsSync(`${ref}/src/decision/decide.ts`)) return { src: `${ref.replace(/\/$/, '')}/src`, remove() {} };
  const dir = mkdtempSync(`${tmpdir()}/podid-decision-bench-`);
  execFileSync('sh', ['-c', 'git -C "$1" archive "$2" src | tar -x -C "$3"', 'sh', ROOT, ref, dir]);
  symlinkSync(`${ROOT}node_modules`, `${dir}/node_modules`);
  return { src: `${dir}/src`, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const compare = option('compare');
const src = option('src') ?? `${ROOT}src`;
if (process.argv.includes('--json')) {
  console.log(JSON.stringify(run(await load(src))));
} else if (compare === undefined) {
  const r = run(await load(src));
  for (const [mode, ns] of [['managed', r.managed], ['standard', r.standard]] as const) {
    console.log(`${mode}: ${IDENTITIES} identities/bindings, ${PODS} pods: ${ns.toFixed(0)} ns per token request decided (${(1e9 / ns / 1e6).toFixed(2)} M/s on one core)`);
  }
  console.log(`standard/managed: ${(r.standard / r.managed).toFixed(2)}x, heap ${r.heapMiB.toFixed(0)} MiB`);
} else {
  const rounds = Number(option('rounds') ?? 5);
  const other = sourceOf(compare);
  try {
    const builds = [{ name: 'this', src }, { name: compare, src: other.src }];
    const results = new Map<string, Array<{ managed: number; standard: number }>>(builds.map((b) => [b.name, []]));
    for (let round = 0; round < rounds; round++) {
      for (const b of round % 2 === 0 ? builds : [...builds].reverse()) {
        const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--json', `--src=${b.src}`], { encoding: 'utf8' });
        results.get(b.name)!.push(JSON.parse(out));
      }
    }
    const [a, b] = builds.map((x) => results.get(x.name)!);
    console.log(`${rounds} alternating rounds, ${N.toLocaleString('en')} requests per mode and round; ns per token request, median (runs)`);
    for (const mode of ['managed', 'standard'] as const) {
      const runs = (r: typeof a) => r!.map((x) => x[mode].toFixed(0)).join(', ');
      const ratios = a!.map((x, i) => x[mode] / b![i]![mode]);
      console.log(`${mode}: this ${median(a!.map((x) => x[mode])).toFixed(0)} (${runs(a)}) | ${compare} ${median(b!.map((x) => x[mode])).toFixed(0)} (${runs(b)}) | ratio ${median(ratios).toFixed(2)} (${ratios.map((x) => x.toFixed(2)).join(', ')})`);
    }
  } finally {
    other.remove();
  }
}
