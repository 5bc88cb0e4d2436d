// `npm start` and the README's demo commands, run verbatim: what the walkthrough promises must happen.
import t from 'tap';
import { spawn, execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const readme = await readFile(`${root}README.md`, 'utf8');
const block = /## Demo walkthrough[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';

t.test('the demo walkthrough works verbatim', async (t) => {
  t.ok(block.includes('curl'), 'the walkthrough has commands');
  const demo = spawn(process.execPath, [`${root}src/cli.ts`, 'demo'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { demo.kill('SIGTERM'); });
  let out = '';
  demo.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  demo.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo did not start: ${out}`)), 30_000);
    const check = setInterval(() => {
      if (out.includes('Ctrl-C stops')) { clearInterval(check); clearTimeout(timer); resolve(); }
    }, 50);
    demo.once('exit', (code) => { clearInterval(check); clearTimeout(timer); reject(new Error(`demo exited ${code}: ${out}`)); });
  });

  // Each command runs as written; a marker line before it lets the outputs be told apart.
  const steps: Array<{ expect: string; command: string }> = [];
  let comment = '';
  const script = block.split('\n').map((line) => {
    if (line.startsWith('#')) { comment = line; return line; }
    if (!line.startsWith('curl')) return line;
    steps.push({ expect: comment, command: line });
    return `echo '@@@'; ${line}; echo`;
  }).join('\n');
  const { stdout } = await run('bash', ['-c', script], { timeout: 20_000 });
  const outputs = stdout.split('@@@\n').slice(1);
  t.equal(outputs.length, steps.length);
  steps.forEach((step, i) => {
    const output = outputs[i] ?? '';
    const reason = /"reason":"([a-z_]+)"/.exec(step.expect)?.[1];
    if (step.expect.includes('(200')) {
      const body = JSON.parse(output) as Record<string, string>;
      t.type(body.access_token, 'string', step.command);
      const client = /client_id (\d{4})/.exec(step.expect)?.[1];
      t.ok(body.client_id?.startsWith(client ?? '?'), `${step.command}: client ${client}`);
    } else if (reason !== undefined) {
      t.match(output, `"reason":"${reason}"`, step.command);
    } else if (step.expect.includes('Required metadata header')) {
      t.match(output, 'Required metadata header not specified', step.command);
    } else {
      t.match(output, /podid_nmi_requests_total\{route="token",decision="granted",status="200",reason=""\} 1/, step.command);
    }
  });
  demo.kill('SIGTERM');
  const code = await new Promise((resolve) => demo.once('exit', resolve));
  t.equal(code, 0, 'SIGTERM stops the demo with status 0');
});
