/**
 * The one place where ZeroMQ sockets are created, so that transport options
 * (and later CURVE authentication) are set consistently for every role.
 */
import * as zmq from 'zeromq';

export interface SocketOptions {
  /** Milliseconds queued messages may linger on close. */
  linger?: number;
  /** Identity for DEALER sockets (routing id seen by the ROUTER). */
  routingId?: string;
}

const HIGH_WATER_MARK = 0; // unbounded queues: collectives bound their own in-flight chunks

/** Control plane, coordinator side. */
export function controlServer(opts: SocketOptions = {}): zmq.Router {
  return new zmq.Router({ linger: opts.linger ?? 0, sendHighWaterMark: HIGH_WATER_MARK, receiveHighWaterMark: HIGH_WATER_MARK, mandatory: false });
}

/** Control plane, worker side. */
export function controlClient(opts: SocketOptions = {}): zmq.Dealer {
  return new zmq.Dealer({
    linger: opts.linger ?? 1000,
    sendHighWaterMark: HIGH_WATER_MARK,
    receiveHighWaterMark: HIGH_WATER_MARK,
    ...(opts.routingId ? { routingId: opts.routingId } : {}),
  });
}

/** Data plane: where a worker receives from its ring neighbours. */
export function dataInbox(opts: SocketOptions = {}): zmq.Pull {
  return new zmq.Pull({ linger: opts.linger ?? 0, receiveHighWaterMark: HIGH_WATER_MARK });
}

/** Data plane: a worker's link to one peer's inbox. */
export function dataLink(opts: SocketOptions = {}): zmq.Push {
  return new zmq.Push({ linger: opts.linger ?? 1000, sendHighWaterMark: HIGH_WATER_MARK });
}

export type ControlServer = zmq.Router;
export type ControlClient = zmq.Dealer;
export type DataInbox = zmq.Pull;
export type DataLink = zmq.Push;
