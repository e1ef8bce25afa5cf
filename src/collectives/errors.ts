/** Why a collective failed. Once one fails, the ring is broken and every later op fails with code 'broken'. */
export const COLLECTIVE_ERROR_CODES = [
  'usage', // bad arguments on this rank (wrong dtype, 'mean' of integers, root out of range)
  'timeout', // the left neighbour was silent for timeoutMs
  'protocol', // a frame that does not decode, or a message of the wrong job/type/op/seq/order/sender/dtype
  'mismatch', // ranks passed arrays of different lengths
  'aborted', // another rank failed and said so
  'broken', // an earlier op failed on this ring
  'closed', // close() was called
  'transport', // ZeroMQ refused a send or receive
] as const;
export type CollectiveErrorCode = (typeof COLLECTIVE_ERROR_CODES)[number];

export class CollectiveError extends Error {
  constructor(
    readonly code: CollectiveErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'CollectiveError';
  }
}
