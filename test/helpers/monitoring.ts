// What daemonset/monitoring/ queries: every expression of the PrometheusRule and the dashboard,
// and the metric names in them; and the sample names a /metrics page exposes.
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';

const DIR = new URL('../../daemonset/monitoring/', import.meta.url);

export interface RuleGroups {
  groups: Array<{ name: string; rules: Array<{ alert?: string; record?: string; expr: string; annotations?: Record<string, string> }> }>;
}

export async function ruleGroups(): Promise<RuleGroups> {
  const rule = parse(await readFile(new URL('prometheusrule.yaml', DIR), 'utf8')) as { spec: RuleGroups };
  return rule.spec;
}

interface Panel { title?: string; targets?: Array<{ expr: string }>; panels?: Panel[] }

export async function dashboard(): Promise<{ panels: Panel[]; templating: { list: Array<{ query?: unknown; definition?: string }> } }> {
  return JSON.parse(await readFile(new URL('podid-nmi-dashboard.json', DIR), 'utf8'));
}

/** Every PromQL expression of the dashboard, with Grafana's variables filled in as Prometheus would see them. */
export async function dashboardExprs(): Promise<string[]> {
  const d = await dashboard();
  const out: string[] = [];
  const walk = (ps: Panel[]): void => {
    for (const p of ps) {
      for (const target of p.targets ?? []) out.push(target.expr);
      walk(p.panels ?? []);
    }
  };
  walk(d.panels);
  for (const v of d.templating.list) if (typeof v.definition === 'string') out.push(v.definition.replace(/^label_values\((\w+),.*\)$/, '$1'));
  return out.map((e) => e.replaceAll('$__rate_interval', '5m').replaceAll('$node', '.*'));
}

export async function ruleExprs(): Promise<string[]> {
  return (await ruleGroups()).groups.flatMap((g) => g.rules.map((r) => r.expr));
}

/** Series names the expressions read; `up` is Prometheus's own, every other one must be the daemon's. */
export function metricNames(exprs: readonly string[]): Set<string> {
  const names = new Set<string>();
  for (const e of exprs) {
    for (const m of e.matchAll(/\b((?:podid_nmi|aadpodidentity|process|nodejs)_[a-z0-9_]+|up)\b/g)) names.add(m[1]!);
  }
  return names;
}

/** The sample names on a /metrics page (histograms show as _bucket, _sum and _count). */
export function exposedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const line of exposition.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (m !== null) names.add(m[1]!);
  }
  return names;
}
