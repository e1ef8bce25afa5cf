/**
 * The one place where ZeroMQ sockets are created, so that transport options —
 * CURVE encryption and authentication, the frame size limit — are set the same
 * way for every role.
 *
 * Control plane: the coordinator's ROUTER, each worker's DEALERs (its main
 * channel and its heartbeat thread's). Data plane: each worker's ring inbox
 * (ROUTER) and its link to the right neighbour's inbox (DEALER). Every DEALER
 * carries a routing id the receiver checks, so a message is attributed to the
 * connection it came in on, never to what its header claims.
 *
 * With CURVE the servers (coordinator, inboxes) accept only clients whose
 * public key is in authorized_keys (see zap.ts); without it (loopback use)
 * anyone who can reach the port can connect, and the checks above the
 * transport — token, routing ids, sessions — are all that stands in the way.
 */
import * as zmq from 'zeromq';
import type { CurveKeys } from './keys.js';
import { zapDomain, type ZapPolicy } from './zap.js';

export interface Transport {
  /** null: plain TCP (no encryption, no peer authentication). */
  curve: CurveKeys | null;
  /** Largest frame any receiving socket accepts; a peer sending a larger one is disconnected before its bytes are read. */
  maxFrameBytes: number;
}

/** Frame limit when none is configured: the default ring chunk (4 MiB) and headers with room to spare. */
export const DEFAULT_MAX_FRAME_BYTES = 64 << 20;

export const PLAIN_TRANSPORT: Transport = { curve: null, maxFrameBytes: DEFAULT_MAX_FRAME_BYTES };

export interface SocketOptions {
  /** Milliseconds queued messages may linger on close. */
  linger?: number;
  /** Identity for DEALER sockets (routing id seen by the ROUTER). */
  routingId?: string;
}

const HIGH_WATER_MARK = 0; // unbounded queues: collectives bound their own in-flight chunks

function serverOptions(t: Transport): Partial<zmq.Router> {
  return {
    maxMessageSize: t.maxFrameBytes,
    ...(t.curve ? { curveServer: true, curvePublicKey: t.curve.own.publicKey, curveSecretKey: t.curve.own.secretKey } : {}),
  };
}

function clientOptions(t: Transport, serverKey: string | undefined, opts: SocketOptions): Partial<zmq.Dealer> {
  if (t.curve && !serverKey) throw new Error("CURVE client socket without the server's public key");
  return {
    maxMessageSize: t.maxFrameBytes,
    ...(opts.routingId ? { routingId: opts.routingId } : {}),
    ...(t.curve ? { curveServerKey: serverKey!, curvePublicKey: t.curve.own.publicKey, curveSecretKey: t.curve.own.secretKey } : {}),
  };
}

/** Control plane, coordinator side. Bind it with {@link bindServer}. */
export function controlServer(t: Transport, opts: SocketOptions = {}): zmq.Router {
  return new zmq.Router({ linger: opts.linger ?? 0, sendHighWaterMark: HIGH_WATER_MARK, receiveHighWaterMark: HIGH_WATER_MARK, mandatory: false, ...serverOptions(t) });
}

/** Control plane, worker side: a DEALER to the coordinator. */
export function controlClient(t: Transport, opts: SocketOptions = {}): zmq.Dealer {
  return new zmq.Dealer({
    linger: opts.linger ?? 1000,
    sendHighWaterMark: HIGH_WATER_MARK,
    receiveHighWaterMark: HIGH_WATER_MARK,
    ...clientOptions(t, t.curve?.coordinatorKey, opts),
  });
}

/** Data plane: where a worker receives from its left ring neighbour. Bind it with {@link bindServer}. */
export function dataInbox(t: Transport, opts: SocketOptions = {}): zmq.Router {
  return new zmq.Router({ linger: opts.linger ?? 0, receiveHighWaterMark: HIGH_WATER_MARK, mandatory: false, ...serverOptions(t) });
}

/** Data plane: a worker's link to its right neighbour's inbox, whose public key is `serverKey` (CURVE only). */
export function dataLink(t: Transport, serverKey: string | undefined, opts: SocketOptions = {}): zmq.Dealer {
  return new zmq.Dealer({ linger: opts.linger ?? 1000, sendHighWaterMark: HIGH_WATER_MARK, ...clientOptions(t, serverKey, opts) });
}

/**
 * Binds a server socket. With CURVE it first registers the socket's ZAP
 * policy (accept only authorized_keys); the returned function removes it and
 * must be called after the socket is closed.
 */
export async function bindServer(socket: zmq.Router, address: string, t: Transport, hooks: Omit<ZapPolicy, 'authorized'> = {}): Promise<() => void> {
  let release = () => {};
  if (t.curve) {
    const zap = await zapDomain({ authorized: t.curve.authorized, ...hooks });
    socket.zapDomain = zap.domain;
    release = zap.release;
  }
  try {
    await socket.bind(address);
  } catch (e) {
    release();
    throw e;
  }
  return release;
}

export type ControlServer = zmq.Router;
export type ControlClient = zmq.Dealer;
export type DataInbox = zmq.Router;
export type DataLink = zmq.Dealer;
