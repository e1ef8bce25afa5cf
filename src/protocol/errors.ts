/** Every way a received message can be wrong, each with its own code. */
export const PROTOCOL_ERROR_CODES = [
  'undecodable-header',
  'version-mismatch',
  'unknown-type',
  'bad-field',
  'tensor-frame-count',
  'tensor-length',
  'wrong-job',
  'rank-out-of-range',
  'unexpected-type',
  'bad-token',
  'rank-taken',
  'batch-mismatch',
  'shape-mismatch',
] as const;
export type ProtocolErrorCode = (typeof PROTOCOL_ERROR_CODES)[number];

export class ProtocolError extends Error {
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'ProtocolError';
  }
}
