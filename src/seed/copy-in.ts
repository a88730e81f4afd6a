// Owns COPY ... FROM STDIN over a node-postgres client without pg-copy-streams (not a dependency):
// a submittable query that answers CopyInResponse with CopyData chunks and CopyDone, honouring the
// socket's backpressure.
import type pg from 'pg';

/** What pg's Connection offers a submittable (lib/connection.js; not in @types/pg). */
interface PgConnection {
  query(text: string): void;
  /** Returns nothing: backpressure is read from stream.writableNeedDrain. */
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  sendCopyFail(message: string): void;
  stream: {
    writableNeedDrain: boolean;
    once(event: 'drain' | 'close', fn: () => void): unknown;
    off(event: 'drain' | 'close', fn: () => void): unknown;
  };
}

/**
 * Runs `sql` (a COPY ... FROM STDIN) and streams `chunks` (text-format rows, each chunk whole
 * lines). Resolves with the row count from CommandComplete.
 */
export function copyIn(client: pg.Client, sql: string, chunks: Iterable<Buffer>): Promise<number> {
  return new Promise((resolve, reject) => {
    let error: Error | undefined;
    let rows = 0;
    let copying = false;
    const submittable = {
      submit(connection: PgConnection): void {
        connection.query(sql);
      },
      handleCopyInResponse(connection: PgConnection): void {
        copying = true;
        void pump(connection);
      },
      handleCommandComplete(msg: { text?: string }): void {
        const m = /^COPY (\d+)/.exec(msg.text ?? '');
        if (m) rows = Number(m[1]);
      },
      handleError(err: Error): void {
        // The server ends copy mode on an error (simple query: ReadyForQuery follows at once),
        // so pump() stops sending.
        copying = false;
        error = err;
      },
      handleReadyForQuery(): void {
        if (error) reject(error);
        else resolve(rows);
      },
      handleRowDescription(): void {},
      handleDataRow(): void {},
      handleEmptyQuery(): void {},
      handlePortalSuspended(): void {},
      handleCopyData(): void {},
    };
    const pump = async (connection: PgConnection): Promise<void> => {
      try {
        for (const chunk of chunks) {
          if (!copying) return;
          connection.sendCopyFromChunk(chunk);
          if (connection.stream.writableNeedDrain) {
            await new Promise<void>((done) => {
              const settle = () => {
                connection.stream.off('drain', settle);
                connection.stream.off('close', settle);
                done();
              };
              connection.stream.once('drain', settle);
              connection.stream.once('close', settle);
            });
          }
        }
        if (copying) connection.endCopyFrom();
      } catch (err) {
        // The generator threw: abort the COPY so the server rolls it back and answers.
        if (copying) connection.sendCopyFail((err as Error).message);
      }
    };
    (client.query as unknown as (q: unknown) => void)(submittable);
  });
}
