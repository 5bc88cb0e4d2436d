// The reference's table of answers and flags is what operators read: it must say what the code does.
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { FLAGS, IGNORED_FLAGS } from '../src/config/flags.ts';
import { REASONS, REFUSALS } from '../src/decision/reasons.ts';

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
// The tables of answers and flags live in docs/reference.md since the README was split by task.
const reference = await readFile(new URL('../docs/reference.md', import.meta.url), 'utf8');

t.test('every refusal reason is in the table with its status, error and description', async (t) => {
  for (const reason of REASONS) {
    const spec = REFUSALS[reason] as { status: number; error: string; description: string; retryAfter?: number };
    const row = reference.split('\n').find((l) => l.startsWith(`| \`${reason}\` |`));
    t.ok(row, `${reason} has a row`);
    t.match(row, `| ${spec.status}${spec.retryAfter ? ` (Retry-After ${spec.retryAfter})` : ''} | \`${spec.error}\` | ${spec.description} |`, reason);
  }
});

t.test('every flag and ignored flag is documented', async (t) => {
  for (const f of FLAGS) if (f.name !== 'help') t.match(reference, `\`--${f.name}\``, f.name);
  for (const name of IGNORED_FLAGS.keys()) t.match(reference, `\`--${name}\``, name);
});

t.test('the flag table gives each flag\'s real default, and says which are NMI\'s', async (t) => {
  for (const f of FLAGS) {
    if (f.name === 'help') continue;
    const row = reference.split('\n').find((l) => l.startsWith(`| \`--${f.name}\``));
    t.ok(row, `--${f.name} has a row`);
    const cells = (row ?? '').split('|').map((c) => c.trim());
    const shown = cells[2]?.replace(/`/g, '');
    const expected = f.type === 'bool' && f.name === 'version' ? '' : f.default === '' ? '' : String(f.default);
    t.equal(shown, expected, `--${f.name}: default ${JSON.stringify(expected)}`);
    t.equal(cells[3]?.startsWith('NMI\'s'), f.nmi === true, `--${f.name}: ${f.nmi === true ? 'marked' : 'not marked'} as NMI's`);
  }
});

t.test('the first screen gives the two commands', async (t) => {
  const head = readme.split('\n').slice(0, 20).join('\n');
  t.match(head, 'npm ci && npm start');
  t.match(head, 'npm test');
});
