// pino, JSON by default (the DaemonSet's format); `text` is for people at a terminal.
// Redaction is a second fence: nothing that could carry a token is ever logged on purpose.
import { createRequire } from 'node:module';
import { pino, type Logger, type LevelWithSilent } from 'pino';

// pino-pretty is loaded only for the text format: the DaemonSet logs JSON and need not hold it.
const require = createRequire(import.meta.url);

export type LogFormat = 'json' | 'text';

export const LOG_LEVELS: readonly LevelWithSilent[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

const CENSOR = '[redacted]';

/**
 * What pino's `redact` did with the paths `access_token`, `*.access_token`, `token`, `*.token`,
 * `headers.authorization` and `req.headers.authorization`, without its copy of every line (a
 * third of a logged grant's cost): the line is copied only when one of them is there.
 */
export function redactSecrets(line: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const key in line) {
    const value = line[key];
    const kept = isSecretKey(key) ? CENSOR : typeof value === 'object' && value !== null ? redactedInside(key, value as Record<string, unknown>) : value;
    if (kept !== value) (out ??= { ...line })[key] = kept;
  }
  return out ?? line;
}

function isSecretKey(key: string): boolean {
  return key === 'access_token' || key === 'token';
}

function redactedInside(key: string, value: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  if ('access_token' in value) (out ??= copyOf(value)).access_token = CENSOR;
  if ('token' in value) (out ??= copyOf(value)).token = CENSOR;
  if (key === 'headers' && 'authorization' in value) (out ??= copyOf(value)).authorization = CENSOR;
  const headers = key === 'req' ? value.headers : undefined;
  if (typeof headers === 'object' && headers !== null && 'authorization' in headers) {
    (out ??= copyOf(value)).headers = { ...headers as Record<string, unknown>, authorization: CENSOR };
  }
  return out ?? value;
}

/** A copy that keeps what the serialisers look at (an Error's message and stack are not own enumerable). */
function copyOf(value: Record<string, unknown>): Record<string, unknown> {
  return value instanceof Error ? Object.assign(Object.create(Object.getPrototypeOf(value) as object) as Record<string, unknown>, value, { message: value.message, stack: value.stack }) : { ...value };
}

export function createLogger(format: LogFormat, level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { name: 'podid-nmi' }, formatters: { log: redactSecrets } };
  if (format === 'text') {
    const pretty = require('pino-pretty') as typeof import('pino-pretty');
    return pino(options, pretty({ colorize: false, sync: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name', destination: destination ?? 1 }));
  }
  return destination === undefined ? pino(options) : pino(options, destination);
}
