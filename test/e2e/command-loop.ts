// The child side of line-process.ts: JSON commands on stdin, one reply line each on stdout,
// and a clean stop on SIGTERM, SIGINT or the end of stdin.
import { createInterface } from 'node:readline';

export function print(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** `handle` returns the reply's fields (merged into {id, ok: true}) or throws for {ok: false}. */
export function serveCommands(handle: (cmd: Record<string, unknown>) => Record<string, unknown>, close: () => Promise<void>): void {
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (text) => {
    if (text.trim() === '') return;
    let id: unknown;
    try {
      const cmd = JSON.parse(text) as Record<string, unknown>;
      id = cmd.id;
      print({ id, ok: true, ...handle(cmd) });
    } catch (err) {
      print({ id, ok: false, error: (err as Error).message });
    }
  });
  rl.on('close', () => void stop());
}
