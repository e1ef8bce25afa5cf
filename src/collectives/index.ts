export { Ring, DEFAULT_CHUNK_BYTES, DEFAULT_IN_FLIGHT, DEFAULT_SCAVENGE_BYTES, DEFAULT_TIMEOUT_MS, MIN_CHUNK_BYTES, type RingOptions } from './ring.js';
export { bindInbox } from './inbox.js';
export { splitCounts } from './split.js';
export { CollectiveError, COLLECTIVE_ERROR_CODES, type CollectiveErrorCode } from './errors.js';
export type { ReduceOp, RingArray } from './reduce.js';
export { openCollectives, hostLayout, TRANSPORT_CHOICES, type TransportChoice, type OpenCollectivesOptions } from './transport.js';
export { ringCollectives, type Collectives, type CollectiveTransport } from './collectives.js';
