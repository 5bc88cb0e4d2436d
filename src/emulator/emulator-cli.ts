import { readFile } from 'node:fs/promises';
import { startImdsEmulator } from './emulator-server.ts';
import { DEFAULT_SYSTEM_ASSIGNED, DEFAULT_USER_ASSIGNED, parseIdentitiesFile } from './default-identities.ts';
import type { IdentitiesFile } from './default-identities.ts';
import type { EmulatorOptions } from './types.ts';

export const DEFAULT_EMULATOR_LISTEN = '127.0.0.1:8079';

export interface EmulatorCliIo {
  stdout?: (line: string) => void;
  stderr?: (line: string) => void;
  /** Stops the emulator like SIGINT/SIGTERM would; lets tests run the CLI in-process. */
  signal?: AbortSignal;
}

const USAGE = `Usage: nmi imds-emulator [flags]
Serves a fake Azure IMDS (managed-identity tokens and metadata) for tests and demos.

  --listen HOST:PORT        address to listen on (default ${DEFAULT_EMULATOR_LISTEN})
  --allow-non-loopback      allow a non-loopback HOST (e.g. 169.254.169.254 inside a netns)
  --identities FILE         JSON {"systemAssigned":{...},"identities":[{clientID,resourceID,objectID}],"tenantId":"..."}
                            (default: a built-in system-assigned identity and two user-assigned ones)
  --rate-limit=true|false   throttle token requests like IMDS (default true)
  --rps N                   token requests per second before 429 (default 20)
  --concurrent N            token requests in flight before 429 (default 5)
  --token-latency-ms N      delay before each token answer (default 0)
  --help                    print this help
Runs until SIGINT or SIGTERM.`;

class UsageError extends Error {}

interface CliConfig {
  host: string;
  port: number;
  allowNonLoopback: boolean;
  identitiesFile?: string;
  rateLimit: boolean;
  rps: number;
  concurrent: number;
  tokenLatencyMs: number;
  help: boolean;
}

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || !(port >= 0 && port <= 65535)) {
    throw new UsageError(`invalid value for --listen: ${value} (want HOST:PORT)`);
  }
  return { host, port };
}

function parseInteger(flag: string, value: string, min: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min) throw new UsageError(`invalid value for ${flag}: ${value}`);
  return Number(value);
}

function parseBoolean(flag: string, value: string | undefined): boolean {
  if (value === undefined || value === 'true') return true;
  if (value === 'false') return false;
  throw new UsageError(`invalid value for ${flag}: ${value}`);
}

function parseArgs(argv: readonly string[]): CliConfig {
  const listen = parseListen(DEFAULT_EMULATOR_LISTEN);
  const cfg: CliConfig = {
    ...listen,
    allowNonLoopback: false,
    rateLimit: true,
    rps: 20,
    concurrent: 5,
    tokenLatencyMs: 0,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const eq = arg.indexOf('=');
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    const inline = eq === -1 ? undefined : arg.slice(eq + 1);
    const value = (): string => {
      if (inline !== undefined) return inline;
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new UsageError(`flag ${flag} needs a value`);
      i++;
      return next;
    };
    switch (flag) {
      case '--help':
      case '-h':
        cfg.help = true;
        break;
      case '--listen':
        Object.assign(cfg, parseListen(value()));
        break;
      case '--allow-non-loopback':
        cfg.allowNonLoopback = parseBoolean(flag, inline);
        break;
      case '--identities':
        cfg.identitiesFile = value();
        break;
      case '--rate-limit':
        cfg.rateLimit = parseBoolean(flag, inline);
        break;
      case '--no-rate-limit':
        cfg.rateLimit = false;
        break;
      case '--rps':
        cfg.rps = parseInteger(flag, value(), 1);
        break;
      case '--concurrent':
        cfg.concurrent = parseInteger(flag, value(), 1);
        break;
      case '--token-latency-ms':
        cfg.tokenLatencyMs = parseInteger(flag, value(), 0);
        break;
      default:
        throw new UsageError(arg.startsWith('-') ? `unknown flag ${flag}` : `unexpected argument ${arg}`);
    }
  }
  return cfg;
}

function waitForStop(signal: AbortSignal | undefined): { stopped: Promise<string>; cancel: () => void } {
  let cancel = (): void => {};
  const stopped = new Promise<string>((resolve) => {
    const stop = (why: string): void => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      signal?.removeEventListener('abort', onAbort);
      resolve(why);
    };
    const onInt = (): void => stop('SIGINT');
    const onTerm = (): void => stop('SIGTERM');
    const onAbort = (): void => stop('abort');
    process.once('SIGINT', onInt);
    process.once('SIGTERM', onTerm);
    cancel = () => stop('cancelled');
    if (signal?.aborted) stop('abort');
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
  return { stopped, cancel };
}

/**
 * `nmi imds-emulator`: argv is what follows the subcommand. Resolves 0 after a clean stop,
 * 2 on a usage error, 1 when the emulator cannot start.
 */
export async function runEmulatorCli(argv: string[], io: EmulatorCliIo = {}): Promise<number> {
  const out = io.stdout ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const err = io.stderr ?? ((line: string) => void process.stderr.write(`${line}\n`));
  let cfg: CliConfig;
  try {
    cfg = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    err(`imds-emulator: ${e.message} (see --help)`);
    return 2;
  }
  if (cfg.help) {
    out(USAGE);
    return 0;
  }

  let file: IdentitiesFile = { systemAssigned: DEFAULT_SYSTEM_ASSIGNED, identities: DEFAULT_USER_ASSIGNED };
  if (cfg.identitiesFile !== undefined) {
    try {
      file = parseIdentitiesFile(await readFile(cfg.identitiesFile, 'utf8'));
    } catch (e) {
      err(`imds-emulator: bad --identities file ${cfg.identitiesFile}: ${(e as Error).message}`);
      return 2;
    }
  }

  const options: EmulatorOptions = {
    host: cfg.host,
    port: cfg.port,
    allowNonLoopback: cfg.allowNonLoopback,
    identities: file.identities,
    rateLimit: cfg.rateLimit ? { perSecond: cfg.rps, concurrent: cfg.concurrent } : false,
    tokenLatencyMs: cfg.tokenLatencyMs,
  };
  if (file.systemAssigned) options.systemAssigned = file.systemAssigned;
  if (file.tenantId !== undefined) options.tenantId = file.tenantId;

  // Listen for signals before listening on the socket: a supervisor may stop us at once.
  const { stopped, cancel } = waitForStop(io.signal);
  let emulator;
  try {
    emulator = await startImdsEmulator(options);
  } catch (e) {
    cancel();
    err(`imds-emulator: cannot listen on ${cfg.host}:${cfg.port}: ${(e as Error).message}`);
    return 1;
  }
  out(`imds-emulator listening on ${emulator.url} (${file.identities.length} user-assigned identities)`);
  await stopped;
  await emulator.close();
  return 0;
}
