// What every client script prints: exactly one JSON line, then it exits. The script bounds its
// own run (the test bounds it again from outside), so a hanging SDK is reported, not waited on.
import { decodeFakeToken } from '../../../src/emulator/fake-token.ts';

export interface ClientResult {
  ok: boolean;
  /** Whose token it was: from the fake token's claims, else from the answer. */
  clientId: string | null;
  error: string | null;
  ms: number;
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const parts = [`${err.name}: ${err.message}`];
  for (const key of ['errorCode', 'statusCode', 'code'] as const) {
    const v = (err as unknown as Record<string, unknown>)[key];
    if (v !== undefined) parts.push(`${key}=${String(v)}`);
  }
  if (err.cause !== undefined) parts.push(`cause: ${describe(err.cause)}`);
  return parts.join(' ').slice(0, 4000);
}

/** Runs `getToken`, prints {ok, clientId, error, ms} once and exits; gives up after `timeoutMs`. */
export async function runClient(getToken: () => Promise<{ token: string; clientId?: string | undefined }>, timeoutMs = 15_000): Promise<void> {
  const started = performance.now();
  const ms = (): number => Math.round(performance.now() - started);
  let done = false;
  const finish = (r: ClientResult): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    // Exit once the line is out: SDK keep-alive sockets and timers must not hold the process.
    process.stdout.write(`${JSON.stringify(r)}\n`, () => process.exit(0));
  };
  const timer = setTimeout(() => finish({ ok: false, clientId: null, error: `timeout: no answer within ${timeoutMs} ms`, ms: ms() }), timeoutMs);
  try {
    const { token, clientId } = await getToken();
    finish({ ok: true, clientId: decodeFakeToken(token)?.client_id ?? entraAppId(token) ?? clientId ?? null, error: null, ms: ms() });
  } catch (err) {
    finish({ ok: false, clientId: null, error: describe(err), ms: ms() });
  }
}

/** The fake Entra ID's tokens carry the application id as `appid`, as Entra's do. */
function entraAppId(token: string): string | undefined {
  try {
    const appid = (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { appid?: unknown }).appid;
    return typeof appid === 'string' ? appid : undefined;
  } catch {
    return undefined;
  }
}

/** `--name value` from argv, or undefined. */
export function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

export function timeoutOption(): number {
  const v = Number(option('--timeout-ms') ?? 15_000);
  return Number.isFinite(v) && v > 0 ? v : 15_000;
}
