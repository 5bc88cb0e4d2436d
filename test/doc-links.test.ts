// Every relative link in README.md and docs/*.md, and every alert's runbook link, must land on a
// file and heading that exist (GitHub's anchor rules), so moving a section cannot strand a link.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { anchors, brokenReason, relativeLinks, slug } from './helpers/markdown-links.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DOCS = [`${ROOT}README.md`, ...readdirSync(`${ROOT}docs`).filter((f) => f.endsWith('.md')).map((f) => `${ROOT}docs/${f}`)];

t.test('the slug follows GitHub\'s rules', async (t) => {
  t.equal(slug('Security: one hostile pod on the node'), 'security-one-hostile-pod-on-the-node');
  t.equal(slug('`nmi explain`'), 'nmi-explain');
  t.equal(slug('/host/token'), 'hosttoken');
  t.equal(slug('NMI\'s metrics'), 'nmis-metrics');
  t.equal(slug('`route_localnet` and IPVS'), 'route_localnet-and-ipvs');
  t.equal(slug('How a token request is decided (managed mode)'), 'how-a-token-request-is-decided-managed-mode');
  t.same([...anchors('# A\n## A\n```\n# not a heading\n```\n### A')], ['a', 'a-1', 'a-2']);
});

t.test('the checker finds broken links', async (t) => {
  t.equal(brokenReason(ROOT, `${ROOT}README.md`, 'docs/no-such-file.md'), 'docs/no-such-file.md does not exist');
  t.match(brokenReason(ROOT, `${ROOT}README.md`, '#no-such-heading'), /has no heading #no-such-heading/);
  t.match(brokenReason(ROOT, `${ROOT}README.md`, '../../etc/passwd'), /leaves the repository/);
});

t.test('every relative link in README.md and docs/ resolves', async (t) => {
  let count = 0;
  for (const file of DOCS) {
    for (const link of relativeLinks(file)) {
      count++;
      const why = brokenReason(ROOT, file, link.target);
      t.equal(why, undefined, `${link.file.slice(ROOT.length)}:${link.line} → ${link.target}`);
    }
  }
  t.ok(count > 20, `${count} links checked`);
});

t.test('every alert\'s runbook_url names a runbook heading that exists', async (t) => {
  const rules = parse(readFileSync(`${ROOT}daemonset/monitoring/prometheusrule.yaml`, 'utf8')) as {
    spec: { groups: Array<{ rules: Array<{ alert?: string; annotations?: Record<string, string> }> }> };
  };
  const alerts = rules.spec.groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined);
  t.ok(alerts.length >= 10);
  for (const a of alerts) {
    const url = a.annotations?.runbook_url ?? '';
    t.match(url, /^[^:]+\.md#[a-z0-9-]+$/, `${a.alert}: a relative runbook link`);
    t.equal(brokenReason(ROOT, `${ROOT}README.md`, url), undefined, `${a.alert}: ${url}`);
  }
});
