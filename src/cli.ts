#!/usr/bin/env node
// `nmi [flags]` runs the daemon; `nmi demo`, `nmi imds-emulator` and `nmi cleanup-iptables`
// are the other entry points. Exit status 2 is for what the operator must fix in the command.
import { FlagError, flagHelp, parseFlags } from './config/flags.ts';
import { toDaemonConfig } from './config/daemon-config.ts';
import { StateFileError } from './cluster/file-source.ts';
import { VERSION } from './config/version.ts';
import { createLogger } from './observability/logger.ts';
import { registerLeanBuiltins } from './runtime/lean-builtins.ts';

const USAGE = `Usage:
  nmi [flags]                 run the daemon
  nmi demo [flags]            run an IMDS emulator and the daemon on loopback with the example cluster state
  nmi imds-emulator [flags]   run only the IMDS emulator (see nmi imds-emulator --help)
  nmi cleanup-iptables        remove the NAT rules (for an uninstall)
  nmi explain [flags]         what the daemon would answer a pod, step by step (see nmi explain --help)
  nmi version                 (also --version)

Flags (NMI v1.8.17's spellings are accepted as NMI took them: --flag=value, --flag value,
-flag, a bare bool for true, -v 5; managed mode always matches in the pod's namespace):
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'imds-emulator': {
      const { runEmulatorCli } = await import('./emulator/imds-emulator.ts');
      return runEmulatorCli(rest);
    }
    case 'demo': {
      const { runDemo } = await import('./demo/demo.ts');
      return runDemo(rest);
    }
    case 'cleanup-iptables':
      return cleanup(rest);
    case 'explain': {
      const { runExplain } = await import('./explain/explain.ts');
      return runExplain(rest, { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s), env: process.env });
    }
    case 'version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    default:
      return runDaemon(argv);
  }
}

async function runDaemon(argv: string[]): Promise<number> {
  let config;
  let warnings: string[];
  try {
    const parsed = parseFlags(argv, process.env);
    if (parsed.values.help === true) {
      process.stdout.write(USAGE + flagHelp() + '\n');
      return 0;
    }
    if (parsed.values.version === true) {
      process.stdout.write(`${VERSION}\n`);
      return 0;
    }
    if (parsed.positionals.length > 0) throw new FlagError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    config = toDaemonConfig(parsed.values, process.env, parsed.given);
    warnings = parsed.warnings;
  } catch (err) {
    if (err instanceof FlagError) return usageError(err.message);
    throw err;
  }
  const log = createLogger(config.logFormat, config.logLevel);
  for (const w of warnings) log.warn(w);
  registerLeanBuiltins();
  const { startDaemon } = await import('./daemon.ts');
  // Listened for from the start: a SIGTERM while the daemon starts (it may wait for its state
  // before joining a rolling update's ports) stops it once started, instead of killing it.
  const signalled = untilSignal();
  let daemon;
  try {
    daemon = await startDaemon(config, log);
  } catch (err) {
    if (err instanceof StateFileError) return usageError(err.message);
    log.fatal({ err }, 'podid-nmi failed to start');
    return 1;
  }
  await signalled;
  log.info('stopping: finishing in-flight requests; NAT rules stay in place');
  await daemon.close();
  log.info('stopped');
  return 0;
}

async function cleanup(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseFlags(argv, process.env);
  } catch (err) {
    if (err instanceof FlagError) return usageError(err.message);
    throw err;
  }
  const log = createLogger(parsed.values['log-format'] as 'text' | 'json', 'info');
  const { cleanupInterception } = await import('./iptables/index.ts');
  await cleanupInterception({ log });
  log.info('NAT rules removed: pods now reach the metadata service directly');
  return 0;
}

export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      resolve(signal);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
}

function usageError(message: string): number {
  process.stderr.write(`nmi: ${message}\n`);
  return 2;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, (err: unknown) => {
    process.stderr.write(`nmi: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
