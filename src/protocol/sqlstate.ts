// Owns the SQLSTATE codes Sluice itself raises, by name, so call sites never spell bare strings.
// https://www.postgresql.org/docs/current/errcodes-appendix.html
export const SqlState = {
  SuccessfulCompletion: '00000',
  Warning: '01000',
  ConnectionFailure: '08006',
  ConnectionException: '08000',
  ProtocolViolation: '08P01',
  FeatureNotSupported: '0A000',
  InvalidAuthorizationSpecification: '28000',
  InvalidPassword: '28P01',
  InvalidCatalogName: '3D000',
  ActiveSqlTransaction: '25001',
  IdleInTransactionSessionTimeout: '25P03',
  InsufficientPrivilege: '42501',
  SyntaxError: '42601',
  TooManyConnections: '53300',
  QueryCanceled: '57014',
  AdminShutdown: '57P01',
  CannotConnectNow: '57P03',
  ConfigFileError: 'F0000',
  IdleSessionTimeout: '57P05',
  InternalError: 'XX000',
} as const;

export type SqlStateCode = (typeof SqlState)[keyof typeof SqlState];
