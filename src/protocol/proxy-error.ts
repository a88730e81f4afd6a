// Owns the one error type meant for clients: it carries the SQLSTATE and severity that end up
// in the ErrorResponse. Anything else thrown inside the proxy is a bug and reaches clients as XX000.
import { createErrorResponse, type ErrorFields } from './backend-messages.js';
import type { SqlStateCode } from './sqlstate.js';

export class ProxyError extends Error {
  readonly severity: 'ERROR' | 'FATAL';
  readonly code: SqlStateCode | string;
  readonly detail: string | undefined;
  readonly hint: string | undefined;

  constructor(
    code: SqlStateCode | string,
    message: string,
    options: { severity?: 'ERROR' | 'FATAL'; detail?: string; hint?: string } = {},
  ) {
    super(message);
    this.name = 'ProxyError';
    this.code = code;
    this.severity = options.severity ?? 'ERROR';
    this.detail = options.detail;
    this.hint = options.hint;
  }

  get fatal(): boolean {
    return this.severity === 'FATAL';
  }

  toErrorFields(): ErrorFields {
    return {
      severity: this.severity,
      code: this.code,
      message: this.message,
      detail: this.detail,
      hint: this.hint,
    };
  }

  toErrorResponse(): Buffer {
    return createErrorResponse(this.toErrorFields());
  }
}
