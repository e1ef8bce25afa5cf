/** The backbones: `createBackbone` for training, `modelInfo` for their cost. */
export { BACKBONE_NAMES, createBackbone, describeBackbone, isBackboneName } from './backbone.js';
export type { ApplyOptions, ArchitectureOptions, Backbone, BackboneName, BackboneOptions, TrainableVariable } from './backbone.js';
export { humanCount, modelInfo } from './cost.js';
export type { ModelInfo } from './cost.js';
export type { LayerCost } from './trace.js';
export { PendingStats } from './pending-stats.js';
