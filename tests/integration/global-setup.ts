// Owns the one embedded PostgreSQL shared by the whole vitest run; test files reach it via inject('pg').
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/embedded/embedded-postgres.js';

export interface PgInfo {
  host: string;
  port: number;
  user: string;
  password: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pg: PgInfo;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startEmbeddedPostgres({ fast: true });
  const info: PgInfo = { host: server.host, port: server.port, user: server.user, password: server.password };
  project.provide('pg', info);
  return async () => {
    await server.stop();
  };
}
