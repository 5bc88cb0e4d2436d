// pino, JSON by default (the DaemonSet's format); `text` is for people at a terminal.
// Redaction is a second fence: nothing that could carry a token is ever logged on purpose.
import { createRequire } from 'node:module';
import { pino, type Logger, type LevelWithSilent } from 'pino';

// pino-pretty is loaded only for the text format: the DaemonSet logs JSON and need not hold it.
const require = createRequire(import.meta.url);

export type LogFormat = 'json' | 'text';

export const LOG_LEVELS: readonly LevelWithSilent[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

const REDACT = ['access_token', '*.access_token', 'token', '*.token', 'headers.authorization', 'req.headers.authorization'];

export function createLogger(format: LogFormat, level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { name: 'podid-nmi' }, redact: { paths: REDACT, censor: '[redacted]' } };
  if (format === 'text') {
    const pretty = require('pino-pretty') as typeof import('pino-pretty');
    return pino(options, pretty({ colorize: false, sync: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name', destination: destination ?? 1 }));
  }
  return destination === undefined ? pino(options) : pino(options, destination);
}
