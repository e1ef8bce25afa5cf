/**
 * Every message of the shardface protocol, as a discriminated union on `type`.
 *
 * Frame 0 of a ZeroMQ multipart message is the msgpack-encoded {@link Header};
 * frames 1..k are the raw little-endian bytes of the tensors it describes, in
 * order. Type-specific fields live in `body`, validated per type in validate.ts.
 */
import type { DType, AnyTypedArray } from './dtype.js';

/** 2: the security fields (hello.curveKey, welcome.peerKeys/session/ringIds) and the ROUTER/DEALER data plane (docs/protocol.md#compatibility). */
export const PROTOCOL_VERSION = 2;

export interface TensorDesc {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: number;
}

export interface ClassRange {
  /** First class id owned by the shard. */
  start: number;
  /** Number of classes owned (may be 0 when C < n). */
  count: number;
}

/** Bodies, one per message type. */
export interface Bodies {
  /** worker → coordinator: ask to join. `rank` in the header is -1 or the requested rank. */
  hello: {
    host: string;
    pid: number;
    token: string;
    /** Address other workers connect to for the data plane (ring collectives). */
    dataAddress: string;
    device: string;
    backend: string;
    /** The worker's CURVE public key (its ring inbox's server key), '' without CURVE. */
    curveKey: string;
  };
  /** coordinator → worker: you are in; here is your place in the job. */
  welcome: {
    rank: number;
    world: number;
    /** Data-plane address of every rank, index = rank. */
    peers: string[];
    hosts: string[];
    /** CURVE public key of every rank's ring inbox ('' without CURVE), index = rank. */
    peerKeys: string[];
    /** This member's secret: its heartbeat thread proves with it that its heartbeats are this rank's. */
    session: string;
    /** Routing ids on the ring: `send` is this rank's link to its right neighbour, `accept` the only id its inbox takes messages from. */
    ringIds: { send: string; accept: string };
    classRange: ClassRange;
    numClasses: number;
    heartbeatMs: number;
    seed: number;
    /** The job's resolved configuration (opaque to the protocol). */
    config: Record<string, unknown>;
  };
  /** worker → coordinator: backend up, ring connected; ready for step 1. */
  ready: { backend: string; device: string; threads: number | null; reason: string };
  /** Both ways; a worker's heartbeat thread sends its `session` (from welcome) so the coordinator can bind its connection to the rank. */
  heartbeat: { session?: string };
  /**
   * coordinator → workers: run step `header.step`. `checkpoint`: also write a checkpoint at its end (the coordinator's
   * decision, e.g. checkpointMinutes, so that every rank writes at the same step); absent = only the job's own schedule.
   */
  'step-begin': { kind: StepKind; checkpoint?: boolean };
  /**
   * coordinator → workers, between steps: write a checkpoint of the state after step `header.step` (the step that just
   * ended) and report its files as `checkpoint-file` events; sent once before a graceful stop (SIGTERM/SIGINT).
   */
  checkpoint: Record<string, never>;
  /** worker → coordinator: per-row partial softmax statistics of its shard (tensors rowMax, sumExp, target, owned). */
  'softmax-stats': { rows: number; batch: number };
  /** coordinator → workers: global log-sum-exp per row (tensor logSumExp) and the loss. */
  'softmax-reduced': { loss: number; extras: Record<string, number> };
  /**
   * worker → coordinator, before softmax-stats (CurricularFace): the un-margined target cosine of
   * each gathered row whose label the shard owns (tensors targetCos float32, owned uint8).
   */
  'target-stats': { rows: number; batch: number };
  /** coordinator → workers: every row's target cosine (tensor targetCos) and job-wide values such as CurricularFace's t. */
  'target-reduced': { extras: Record<string, number> };
  /** worker → coordinator: step finished. */
  'step-end': { metrics: Record<string, number> };
  /** worker → coordinator: finished the job, or leaving because of `reason`. */
  bye: { reason: string; ok: boolean };
  /** coordinator → workers: stop now; `restart`: a worker failed and the job goes on from its newest checkpoint, so register again (same rank). */
  stop: { reason: string; ok: boolean; restart?: boolean };
  /** either way: something was wrong with a message or with the job. */
  error: { code: string; message: string };
  /** worker → worker (data plane): one chunk of a collective. Tensor `data`. */
  ring: { op: string; seq: number; chunk: number; slot: number };
  /** worker → coordinator: an opaque JSON event (metrics, checkpoints) routed to the coordinator's log. */
  event: { name: string; fields: Record<string, unknown> };
}

export const STEP_KINDS = ['empty', 'train', 'selftest', 'bench'] as const;
export type StepKind = (typeof STEP_KINDS)[number];

export type MessageType = keyof Bodies;
export const MESSAGE_TYPES = [
  'hello',
  'welcome',
  'ready',
  'heartbeat',
  'step-begin',
  'checkpoint',
  'softmax-stats',
  'softmax-reduced',
  'target-stats',
  'target-reduced',
  'step-end',
  'bye',
  'stop',
  'error',
  'ring',
  'event',
] as const satisfies readonly MessageType[];

export interface Header<T extends MessageType = MessageType> {
  v: number;
  type: T;
  job: string;
  step: number;
  rank: number;
  tensors: TensorDesc[];
  body: Bodies[T];
}

/** A decoded message: the header plus one typed view per tensor frame, by name. */
export type Message = {
  [T in MessageType]: { header: Header<T>; tensors: Record<string, AnyTypedArray> };
}[MessageType];

export type MessageOf<T extends MessageType> = Extract<Message, { header: { type: T } }>;
