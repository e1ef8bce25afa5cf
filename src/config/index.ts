/** The training configuration: schema, resolution and printing. */
export * from './schema.js';
export { ConfigError, normaliseKey, readConfigFile, resolveConfig, loadConfig, trainFacts, configWarnings, type ResolveOptions, type TrainFacts } from './resolve.js';
export { formatConfig, configReference, configHelp } from './format.js';
export { parseConfigArgv, type ConfigArgs } from './argv.js';
