export * from './dtype.js';
export * from './errors.js';
export * from './messages.js';
export * from './codec.js';
export * from './sockets.js';
export * from './keys.js';
export * from './z85.js';
