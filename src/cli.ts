#!/usr/bin/env node
// Owns the command line: parses flags with commander and hands them to the config loader and
// startSluice. No logic lives here beyond wiring and signal handling.
import { Command, InvalidArgumentError, Option } from 'commander';
import { startSluice } from './app.js';
import { ConfigError, loadConfig } from './config/load.js';
import { logger } from './observe/logger.js';
import { checkRules, explainStatement } from './rules/commands.js';
import { loadRulesDir, RulesError } from './rules/loader.js';

function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new InvalidArgumentError('expected a number of seconds, 0 or more');
  }
  return n;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

const program = new Command()
  .name('sluice')
  .description('PostgreSQL wire-protocol proxy: pooling, query-aware caching, rules, metrics');

program
  .command('serve')
  .description('run the proxy (with no upstream: start an embedded PostgreSQL and proxy to it)')
  .option('--config <file>', 'YAML configuration file (env: SLUICE_CONFIG)')
  .option('--listen <host:port>', 'where clients connect (default 127.0.0.1:6432; env: SLUICE_LISTEN)')
  .option('--upstream <url>', 'postgres://user[:password]@host:port/database (env: SLUICE_UPSTREAM)')
  .addOption(
    new Option('--auth <method>', 'client authentication (default scram-sha-256; env: SLUICE_AUTH)').choices([
      'trust',
      'md5',
      'scram-sha-256',
    ]),
  )
  .option('--users-file <file>', 'userlist.txt with "user" "password" lines (env: SLUICE_USERS_FILE)')
  .addOption(
    new Option('--pool-mode <mode>', 'default transaction (env: SLUICE_POOL_MODE)').choices([
      'session',
      'transaction',
      'statement',
    ]),
  )
  .option(
    '--pool-size <n>',
    'server connections per (database, user) (default 20; env: SLUICE_POOL_SIZE)',
    positiveInt,
  )
  .option(
    '--max-client-conn <n>',
    'client connection limit (default 1000; env: SLUICE_MAX_CLIENT_CONN)',
    positiveInt,
  )
  .option('--rules <dir>', 'rules directory, watched and reloaded on change (env: SLUICE_RULES)')
  .option('--cache', 'answer repeated reads from the result cache (env: SLUICE_CACHE=true)')
  .option('--redis <url>', 'shared cache tier and invalidation bus, redis://host:port (env: SLUICE_REDIS)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (env: SLUICE_LOG_LEVEL)')
  .option('--tls-cert <file>', 'PEM certificate for client TLS, with --tls-key (env: SLUICE_TLS_CERT)')
  .option('--tls-key <file>', 'PEM private key for client TLS (env: SLUICE_TLS_KEY)')
  .option('--tls-required', 'refuse clients that do not use TLS (env: SLUICE_TLS_REQUIRED=true)')
  .option(
    '--auth-timeout <seconds>',
    'drop a client not logged in after this long (default 60; env: SLUICE_AUTH_TIMEOUT)',
    nonNegativeNumber,
  )
  .option(
    '--max-user-client-connections <n>',
    'client connections per user (env: SLUICE_MAX_USER_CLIENT_CONNECTIONS)',
    positiveInt,
  )
  .option(
    '--max-db-client-connections <n>',
    'client connections per database (env: SLUICE_MAX_DB_CLIENT_CONNECTIONS)',
    positiveInt,
  )
  .option(
    '--client-idle-timeout <seconds>',
    'close clients idle between transactions this long (0: never; env: SLUICE_CLIENT_IDLE_TIMEOUT)',
    nonNegativeNumber,
  )
  .option(
    '--idle-transaction-timeout <seconds>',
    'close clients idle inside a transaction this long and roll it back (env: SLUICE_IDLE_TRANSACTION_TIMEOUT)',
    nonNegativeNumber,
  )
  .action(async (flags: Record<string, unknown>) => {
    let config: ReturnType<typeof loadConfig>;
    try {
      config = loadConfig({
        file: (flags.config as string | undefined) ?? process.env.SLUICE_CONFIG,
        flags: {
          listen: flags.listen,
          upstream: flags.upstream,
          auth: flags.auth,
          users_file: flags.usersFile,
          pool_mode: flags.poolMode,
          pool_size: flags.poolSize,
          max_client_conn: flags.maxClientConn,
          cache: flags.cache,
          redis: flags.redis,
          rules: flags.rules,
          log_level: flags.logLevel,
          tls_cert: flags.tlsCert,
          tls_key: flags.tlsKey,
          tls_required: flags.tlsRequired,
          auth_timeout: flags.authTimeout,
          max_user_client_connections: flags.maxUserClientConnections,
          max_db_client_connections: flags.maxDbClientConnections,
          client_idle_timeout: flags.clientIdleTimeout,
          idle_transaction_timeout: flags.idleTransactionTimeout,
        },
      });
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`sluice: invalid configuration:\n${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
    let sluice: Awaited<ReturnType<typeof startSluice>>;
    try {
      sluice = await startSluice(config);
    } catch (err) {
      if (err instanceof RulesError) {
        process.stderr.write(`sluice: rules refused:\n${err.problems.join('\n')}\n`);
        process.exit(2);
      }
      throw err;
    }
    logger.info(
      {
        listen: `${sluice.host}:${sluice.port}`,
        upstream: `${sluice.upstream.host}:${sluice.upstream.port}`,
        mode: config.pool_mode,
        cache: config.cache ? (config.redis ? 'memory + redis' : 'memory') : 'off',
      },
      'sluice is listening',
    );
    process.stdout.write(`Sluice is ready. Connect with:\n  psql "${sluice.connectionString}"\n`);
    let signals = 0;
    const stop = (signal: string) => {
      signals++;
      if (signals > 1) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      logger.info({ signal }, 'shutting down');
      sluice.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });

const rules = program.command('rules').description('check and explain rules files');

rules
  .command('check')
  .description('load a rules directory and run the test cases its files carry (exit 1 on a failure)')
  .argument('[dir]', 'rules directory', 'rules')
  .action(async (dir: string) => {
    await runRulesCommand(() => checkRules(dir));
  });

rules
  .command('explain')
  .description('show the analysis of a statement, the rules that match it and the final query')
  .argument('<sql>', 'the statement')
  .option('--rules <dir>', 'rules directory', 'rules')
  .option('--user <name>', 'user to match rules against', 'postgres')
  .option('--database <name>', 'database to match rules against', 'postgres')
  .option('--application-name <name>', 'application_name to match rules against')
  .action(async (sql: string, flags: Record<string, string | undefined>) => {
    await runRulesCommand(() =>
      explainStatement(sql, loadRulesDir(flags.rules ?? 'rules'), {
        user: flags.user ?? 'postgres',
        database: flags.database ?? 'postgres',
        applicationName: flags.applicationName,
      }),
    );
  });

/** Prints a rules command's output; a rules directory that does not load exits 2 with its problems. */
async function runRulesCommand(run: () => Promise<{ text: string; code: number }>): Promise<void> {
  // `log: true` rules log their matches in the proxy; here the report is the output.
  logger.level = 'warn';
  try {
    const { text, code } = await run();
    process.stdout.write(`${text}\n`);
    process.exitCode = code;
  } catch (err) {
    if (err instanceof RulesError) {
      process.stderr.write(`sluice: rules refused:\n${err.problems.join('\n')}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
}

program.parseAsync().catch((err: unknown) => {
  logger.error({ err }, 'sluice failed');
  process.exitCode = 1;
});
