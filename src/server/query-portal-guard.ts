// Owns the guard against a PostgreSQL backend crash: an Execute reaching the unnamed portal that a
// simple Query left behind when it failed inside a transaction block.
//
// PostgreSQL (seen on 17.10; fuzz/repro/unnamed-portal-segv.mjs) runs a simple Query in the unnamed
// portal with its statement list in per-message memory. When the statement fails while executing
// inside BEGIN, the failed portal is kept until the block ends, but that memory is reset by the next
// message; an Execute of "" (no Bind in between) then reads the freed list and, for a utility
// statement, follows a freed pointer: SIGSEGV, and the postmaster restarts every backend. The
// protocol says a simple Query destroys the unnamed portal, so Sluice closes it (Close 'P' "")
// before the first Bind or Execute of every batch (up to a Sync) while it may still be that failed
// one: PostgreSQL then answers the Execute with its own 34000 `portal "" does not exist`, as
// documented. Every batch, because an error earlier in a batch makes PostgreSQL skip the Close
// with the rest of it (the fuzzer found that route past a guard that closed once per Query).

const STATUS_FAILED = 0x45; // ReadyForQuery 'E': in a failed transaction block

/** Close 'P' "": closing a portal that does not exist succeeds, so this is always harmless. */
export const CLOSE_UNNAMED_PORTAL = Buffer.from([0x43, 0, 0, 0, 6, 0x50, 0]);

/**
 * Whether a Query sent earlier may have left a failed unnamed portal on the server: its
 * ReadyForQuery is not in yet (a pipelining client), or it left the transaction failed. Only a
 * failed block keeps such a portal (ROLLBACK TO drops what failed in the subtransaction), so a
 * client that mixes simple and extended queries outside failed blocks never pays for the Close.
 */
export function queryPortalMayBeFailed(awaitingReady: number, transactionStatus: number): boolean {
  return awaitingReady > 0 || transactionStatus === STATUS_FAILED;
}
