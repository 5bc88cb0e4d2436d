// The fake Entra ID as a process in the node's network namespace (on its 127.0.0.1), for the
// end-to-end test of workload identity federation. Driven by JSON lines:
//   stdin:  {"id":1,"op":"calls"}
//   stdout: {"event":"ready","authority":"http://127.0.0.1:PORT/"} once, then a reply per command.
// Usage: node entra-process.ts --tenant T --client-id C --issuer URL --subject S --jwks JSON
import { FakeEntra } from '../fake-entra/fake-entra.ts';
import { print, serveCommands } from './command-loop.ts';

const arg = (name: string): string => {
  const i = process.argv.indexOf(name);
  const v = i === -1 ? undefined : process.argv[i + 1];
  if (v === undefined) {
    process.stderr.write(`missing ${name}\n`);
    process.exit(2);
  }
  return v;
};

const entra = await FakeEntra.start('127.0.0.1');
entra.addApp(arg('--client-id'), { tenant: arg('--tenant'), federated: [{ issuer: arg('--issuer'), subject: arg('--subject') }] });
entra.trustIssuer(arg('--issuer'), JSON.parse(arg('--jwks')) as { keys: Array<Record<string, unknown>> });

serveCommands((cmd) => {
  if (cmd.op === 'calls') return { value: entra.calls };
  throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
}, () => entra.close());

print({ event: 'ready', authority: entra.authority });
